package heartbeat

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"hash"
	"slices"
	"sync"
)

// keySalt is the HKDF salt of DeriveKey. Changing it is a protocol change.
const keySalt = "hagent-heartbeat-v1"

// KeyLen is the length of the key returned by DeriveKey.
const KeyLen = 32

// DeriveKey derives the heartbeat HMAC key of a group from its password:
// HKDF-SHA256 with salt "hagent-heartbeat-v1" and info "group" followed by
// the big-endian 16-bit group id, 32 bytes of output. Clusters with the same
// password but different group ids get unrelated keys.
func DeriveKey(password []byte, groupID uint16) []byte {
	info := []byte{'g', 'r', 'o', 'u', 'p', 0, 0}
	binary.BigEndian.PutUint16(info[5:], groupID)
	key, err := hkdf.Key(sha256.New, password, []byte(keySalt), string(info), KeyLen)
	if err != nil {
		// Only possible for output lengths HKDF-SHA256 cannot produce, or
		// keys that FIPS 140-only mode refuses; neither depends on input.
		panic("heartbeat: HKDF: " + err.Error())
	}
	return key
}

// A Codec encodes and authenticates frames of one group, and decodes and
// verifies received ones.
//
// A Codec is safe for concurrent use. Append and Decode each hold their own
// HMAC state under their own mutex, so a sender goroutine and a receiver
// goroutine sharing one Codec never wait on each other; concurrent calls of
// the same method are serialized.
type Codec struct {
	groupID uint16
	auth    bool
	enc     macState
	dec     macState
}

// macState is an HMAC instance reused across calls, with scratch space for
// computed tags so that neither direction allocates.
type macState struct {
	mu  sync.Mutex
	mac hash.Hash
	sum [tagLen]byte
}

// NewCodec returns a codec for group groupID keyed with
// DeriveKey(password, groupID). A nil password disables authentication: the
// codec sends frames with FlagUnauthenticated and a zero tag, and accepts
// only such frames. An authenticating codec rejects them with ErrBadAuth,
// so a cluster cannot be half authenticated. An empty, non-nil password is
// a (weak) password, not "disabled".
func NewCodec(password []byte, groupID uint16) *Codec {
	c := &Codec{groupID: groupID, auth: password != nil}
	if c.auth {
		key := DeriveKey(password, groupID)
		c.enc.mac = hmac.New(sha256.New, key)
		c.dec.mac = hmac.New(sha256.New, key)
	}
	return c
}

// GroupID returns the group id of the codec.
func (c *Codec) GroupID() uint16 { return c.groupID }

// Authenticated reports whether the codec authenticates frames.
func (c *Codec) Authenticated() bool { return c.auth }

// Append encodes f, appends the frame with its tag to dst and returns the
// extended slice. It does not allocate when dst has MaxFrameLen bytes of
// spare capacity. f.GroupID must be the codec's group (else ErrWrongGroup)
// and f.Version 0 or ProtocolVersion (else ErrVersion); invalid fields
// (empty serial, strings over MaxStringLen, role 0) give ErrMalformed.
// FlagUnauthenticated in f.Flags is ignored: the codec sets it when
// authentication is disabled.
func (c *Codec) Append(dst []byte, f *Frame) ([]byte, error) {
	if f.GroupID != c.groupID {
		return dst, ErrWrongGroup
	}
	n, err := f.encodedLen()
	if err != nil {
		return dst, err
	}
	flags := f.Flags &^ FlagUnauthenticated
	if !c.auth {
		flags |= FlagUnauthenticated
	}
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	b := dst[start:]
	f.put(b, n, flags)
	body := n - tagLen
	if !c.auth {
		clear(b[body:])
		return dst, nil
	}
	c.enc.mu.Lock()
	c.enc.mac.Reset()
	c.enc.mac.Write(b[:body])
	// Sum appends into the tag's place: dst has the capacity.
	c.enc.mac.Sum(b[:body])
	c.enc.mu.Unlock()
	return dst, nil
}

// Decode verifies the frame at the start of b and decodes it into f. The
// checks run in this order and stop at the first failure:
//
//   - b shorter than the 8-byte header: io.ErrUnexpectedEOF
//   - bad magic: ErrMalformed
//   - major version other than ProtocolVersion: ErrVersion
//   - Length below the minimum: ErrMalformed; b shorter than Length:
//     io.ErrUnexpectedEOF
//   - group id other than the codec's: ErrWrongGroup
//   - tag (compared in constant time), or the authentication mode does not
//     match the codec's: ErrBadAuth
//   - invalid fields, strings or extension TLVs: ErrMalformed
//
// Only authenticated content is parsed into f; on error f may be partly
// overwritten. Decode never panics and does not retain b. Decoding frames
// of the same peer into the same Frame does not allocate.
func (c *Codec) Decode(b []byte, f *Frame) error {
	fr, err := parseHeader(b)
	if err != nil {
		return err
	}
	if binary.BigEndian.Uint16(fr[4:6]) != c.groupID {
		return ErrWrongGroup
	}
	body, tag := fr[:len(fr)-tagLen], fr[len(fr)-tagLen:]
	unauth := Flags(fr[3])&FlagUnauthenticated != 0
	if unauth == c.auth {
		return ErrBadAuth
	}
	if c.auth {
		c.dec.mu.Lock()
		c.dec.mac.Reset()
		c.dec.mac.Write(body)
		sum := c.dec.mac.Sum(c.dec.sum[:0])
		ok := hmac.Equal(sum, tag)
		c.dec.mu.Unlock()
		if !ok {
			return ErrBadAuth
		}
	} else {
		var zero [tagLen]byte
		if subtle.ConstantTimeCompare(tag, zero[:]) != 1 {
			return ErrBadAuth
		}
	}
	_, err = parseBody(body, f)
	return err
}
