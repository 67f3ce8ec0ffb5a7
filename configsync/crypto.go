package configsync

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// syncSalt is the HKDF salt of the control channel. It differs from the
// heartbeat's label so the two keys are independent even though both come
// from the same group password.
const syncSalt = "hagent-sync-v1"

// keyring derives the AES-256-GCM keys of the control channel.
//
//	prk         = HKDF-Extract(SHA-256, salt "hagent-sync-v1", password)
//	session key = HKDF-Expand(SHA-256, prk,
//	                info "hagent-sync-v1 session" | group id (2) |
//	                     len(src) (1) | src | src epoch (8), 32)
//
// Every (sender, epoch) pair has its own key, so the 64-bit nonce counter of
// a sender never repeats under one key although all members share the group
// password.
type keyring struct {
	prk     []byte
	groupID uint16
}

func newKeyring(password []byte, groupID uint16) (*keyring, error) {
	prk, err := hkdf.Extract(sha256.New, password, []byte(syncSalt))
	if err != nil {
		return nil, err
	}
	return &keyring{prk: prk, groupID: groupID}, nil
}

// session returns the AEAD of sender src in its epoch.
func (k *keyring) session(src string, epoch uint64) (cipher.AEAD, error) {
	info := make([]byte, 0, 64+len(src))
	info = append(info, syncSalt+" session"...)
	info = binary.BigEndian.AppendUint16(info, k.groupID)
	info = append(info, byte(len(src)))
	info = append(info, src...)
	info = binary.BigEndian.AppendUint64(info, epoch)
	key, err := hkdf.Expand(sha256.New, k.prk, string(info), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// gcmNonce builds the 96-bit GCM nonce: four zero bytes and the frame's
// nonce counter.
func gcmNonce(counter uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], counter)
	return n[:]
}

// replayWindow rejects reused and too-old nonce counters of one sender
// epoch, tolerating reordering within replayWindowBits.
type replayWindow struct {
	max  uint64 // highest accepted counter (0 = none yet)
	bits [replayWindowBits / 64]uint64
}

const replayWindowBits = 1024

// check reports whether counter n would be accepted; it does not record it.
func (w *replayWindow) check(n uint64) bool {
	if n == 0 {
		return false
	}
	if n > w.max {
		return true
	}
	if w.max-n >= replayWindowBits {
		return false
	}
	i := n % replayWindowBits
	return w.bits[i/64]&(1<<(i%64)) == 0
}

// mark records counter n, which check accepted.
func (w *replayWindow) mark(n uint64) {
	if n > w.max {
		if n-w.max >= replayWindowBits {
			w.bits = [replayWindowBits / 64]uint64{}
		} else {
			for c := w.max + 1; c < n; c++ {
				i := c % replayWindowBits
				w.bits[i/64] &^= 1 << (i % 64)
			}
		}
		w.max = n
	}
	i := n % replayWindowBits
	w.bits[i/64] |= 1 << (i % 64)
}
