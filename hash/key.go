package hash

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// KeySize is the length of a [Key] in bytes.
const KeySize = 16

// Key is the 128-bit secret of a keyed hash.
//
// Key is a comparable value type. The zero Key is a valid but public key:
// use [NewKey] or share a random key between the tunnel ends with
// [ParseKey]. [Key.String] reveals the secret: do not log it.
type Key [KeySize]byte

// NewKey returns a random key from [crypto/rand].
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("hash: reading random key: %w", err)
	}
	return k, nil
}

// ParseKey parses a key written as exactly 32 hex digits, upper or lower
// case, without prefix or separators: the form [Key.String] writes.
//
// Errors wrap [ErrKeyLength] or [ErrKeyDigit]. ParseKey never panics.
func ParseKey(s string) (Key, error) {
	var k Key
	if len(s) != 2*KeySize {
		return Key{}, fmt.Errorf("%w: got %d characters", ErrKeyLength, len(s))
	}
	for i := range k {
		hi, ok1 := fromHexDigit(s[2*i])
		lo, ok2 := fromHexDigit(s[2*i+1])
		if !ok1 || !ok2 {
			at := 2 * i
			if ok1 {
				at++
			}
			return Key{}, fmt.Errorf("%w: %q at offset %d", ErrKeyDigit, s[at], at)
		}
		k[i] = hi<<4 | lo
	}
	return k, nil
}

func fromHexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String returns the key as 32 lower-case hex digits, the form [ParseKey]
// reads.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// MarshalText implements [encoding.TextMarshaler] with the form of
// [Key.String].
func (k Key) MarshalText() ([]byte, error) {
	b := make([]byte, 2*KeySize)
	hex.Encode(b, k[:])
	return b, nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] with [ParseKey].
func (k *Key) UnmarshalText(text []byte) error {
	parsed, err := ParseKey(string(text))
	if err != nil {
		return err
	}
	*k = parsed
	return nil
}

// words returns the key as the two 64-bit words k0 and k1 of SipHash: the
// first and last eight bytes, little-endian, as in the SipHash paper.
func (k *Key) words() (k0, k1 uint64) {
	return binary.LittleEndian.Uint64(k[0:8]), binary.LittleEndian.Uint64(k[8:16])
}
