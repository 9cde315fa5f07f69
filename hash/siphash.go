package hash

import (
	"encoding/binary"
	"math/bits"

	"github.com/dchest/siphash"
)

// NewHasher builds a [Hasher] from a key. It is the seam through which a
// [Periodic] policy makes the Hasher of each epoch; [Default] is the usual
// choice. Both tunnel ends must use the same NewHasher.
type NewHasher func(Key) Hasher

// Default returns the default Hasher for k: [SipHash24].
func Default(k Key) Hasher { return NewSipHash24(k) }

var (
	_ NewHasher = Default
	_ Hasher    = (*SipHash24)(nil)
	_ Hasher    = (*SipHash13)(nil)
)

// SipHash24 is SipHash-2-4, the keyed pseudorandom function of Aumasson and
// Bernstein ("SipHash: a fast short-input PRF", INDOCRYPT 2012), computed
// by [github.com/dchest/siphash]. It is the default [Hasher]: an observer
// who does not know the key can neither predict a flow's hash nor choose
// flows that share one.
//
// A SipHash24 is immutable and safe for concurrent use.
type SipHash24 struct {
	k0, k1 uint64
}

// NewSipHash24 returns SipHash-2-4 keyed with k. The key words k0 and k1
// are k's first and last eight bytes read little-endian, as in the paper,
// so the paper's and reference implementation's test vectors apply.
func NewSipHash24(k Key) *SipHash24 {
	k0, k1 := k.words()
	return &SipHash24{k0: k0, k1: k1}
}

// Sum64 returns the SipHash-2-4 of in. It does not allocate.
func (h *SipHash24) Sum64(in Input) uint64 { return siphash.Hash(h.k0, h.k1, in[:]) }

// sum64 returns h.Sum64(*in). The policies hash through it: for the
// default Hasher it hashes *in where it lies, in the policy's own
// arguments, where an interface call would first copy it into the call's
// arguments. Go makes that copy with overlapping 16-byte moves whose load
// of bytes 16-31 spans two stores of the copy that just wrote *in, so it
// cannot be forwarded from the store buffer and waits for the cache.
func sum64(h Hasher, in *Input) uint64 {
	if s, ok := h.(*SipHash24); ok {
		return siphash.Hash(s.k0, s.k1, in[:])
	}
	return h.Sum64(*in)
}

// Sum returns the SipHash-2-4 of any bytes, for test vectors and tools.
// It does not retain p and does not allocate.
func (h *SipHash24) Sum(p []byte) uint64 { return siphash.Hash(h.k0, h.k1, p) }

// SipHash13 is SipHash-1-3: SipHash with one compression round per message
// block and three finalization rounds, the variant Rust's standard library
// and the Linux kernel's hsiphash (on 64-bit) use for hash tables. It does
// about half the rounds of SipHash-2-4, and its security margin is smaller
// accordingly; it is believed strong enough against an observer who only
// sees which outer addresses flows use. It is written in portable Go, so on
// amd64 it is only a little faster than the assembly of [SipHash24]: prefer
// SipHash24 unless hashing shows in profiles.
//
// A SipHash13 is immutable and safe for concurrent use.
type SipHash13 struct {
	k0, k1 uint64
}

// NewSipHash13 returns SipHash-1-3 keyed with k, with the key words read
// as for [NewSipHash24].
func NewSipHash13(k Key) *SipHash13 {
	k0, k1 := k.words()
	return &SipHash13{k0: k0, k1: k1}
}

// Sum64 returns the SipHash-1-3 of in. It does not allocate.
func (h *SipHash13) Sum64(in Input) uint64 { return sipHash(1, 3, h.k0, h.k1, in[:]) }

// Sum returns the SipHash-1-3 of any bytes, for test vectors and tools.
// It does not retain p and does not allocate.
func (h *SipHash13) Sum(p []byte) uint64 { return sipHash(1, 3, h.k0, h.k1, p) }

// sipHash is SipHash-c-d as defined in section 2 of the SipHash paper:
// c SipRounds per 8-byte message word, d SipRounds at finalization. The
// message is read as little-endian words; the last word carries the
// remaining bytes and, in its top byte, the message length mod 256.
func sipHash(c, d int, k0, k1 uint64, p []byte) uint64 {
	// Initialization: the key XORed with "somepseudorandomlygeneratedbytes".
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573

	last := uint64(len(p)) << 56
	for ; len(p) >= 8; p = p[8:] {
		m := binary.LittleEndian.Uint64(p)
		v3 ^= m
		for range c {
			v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		}
		v0 ^= m
	}
	for i, b := range p {
		last |= uint64(b) << (8 * i)
	}
	v3 ^= last
	for range c {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	v0 ^= last

	v2 ^= 0xff
	for range d {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	return v0 ^ v1 ^ v2 ^ v3
}

// sipRound is one SipRound, the ARX network of the paper's figure 2.1.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}
