package l2chan

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// keyring derives the AES-256-GCM keys of one channel instance from its
// label (Config.Label, e.g. "hagent-sync-v1"):
//
//	prk         = HKDF-Extract(SHA-256, salt label, password)
//	session key = HKDF-Expand(SHA-256, prk,
//	                info label " session" | group id (2) |
//	                     len(src) (1) | src | src epoch (8), 32)
//
// Every (sender, epoch) pair has its own key, so the 64-bit nonce counter of
// a sender never repeats under one key although all members share the group
// password. Instances with different labels (one per Ethertype) and the
// heartbeat's HMAC key are independent although all come from the same
// password.
type keyring struct {
	label   string
	prk     []byte
	groupID uint16
}

func newKeyring(label string, password []byte, groupID uint16) (*keyring, error) {
	prk, err := hkdf.Extract(sha256.New, password, []byte(label))
	if err != nil {
		return nil, err
	}
	return &keyring{label: label, prk: prk, groupID: groupID}, nil
}

// session returns the AEAD of sender src in its epoch.
func (k *keyring) session(src string, epoch uint64) (cipher.AEAD, error) {
	info := make([]byte, 0, 64+len(src))
	info = append(info, k.label+" session"...)
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

// gcmNonce builds the 96-bit GCM nonce in n: four zero bytes and the
// frame's nonce counter.
func gcmNonce(n *[12]byte, counter uint64) []byte {
	clear(n[:4])
	binary.BigEndian.PutUint64(n[4:], counter)
	return n[:]
}
