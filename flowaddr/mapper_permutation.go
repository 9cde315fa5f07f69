package flowaddr

import (
	"encoding/binary"

	"github.com/dchest/siphash"
)

// permRounds is the number of Feistel rounds of the scattered layout's
// permutation: four per half, twice the four rounds that Luby and Rackoff
// showed turn a pseudorandom function into a strong pseudorandom
// permutation; the margin covers the unequal halves of odd widths.
const permRounds = 8

// permutation is a keyed permutation of the integers of a fixed width
// (2 to 128 bits), held as two big-endian halves (hi, lo). It is a Feistel
// network over the value's high half a (ceil(width/2) bits) and low half b
// (floor(width/2) bits); halves of unequal width are handled by
// alternating rounds that each change one half in place:
//
//	even round r: a ^= F(r, b) truncated to a's width
//	odd round r:  b ^= F(r, a) truncated to b's width
//
// F(r, x) is SipHash-2-4 of x's 8 little-endian bytes under a key of its
// own per round: the 128-bit SipHash-2-4, under the layout's key (two
// little-endian words, as in the SipHash paper), of the label
// "flowspread scatter" followed by the byte r and the byte width. Each
// round undoes itself, so the inverse runs the rounds backwards.
type permutation struct {
	keys         [permRounds][2]uint64
	aBits, bBits uint8
	aMask, bMask uint64
}

const permLabel = "flowspread scatter"

func newPermutation(key [16]byte, width uint) permutation {
	b := width / 2
	a := width - b
	p := permutation{
		aBits: uint8(a),
		bBits: uint8(b),
		aMask: lowMask(a),
		bMask: lowMask(b),
	}
	k0 := binary.LittleEndian.Uint64(key[:8])
	k1 := binary.LittleEndian.Uint64(key[8:])
	in := []byte(permLabel + "rw")
	for r := range p.keys {
		in[len(permLabel)] = byte(r)
		in[len(permLabel)+1] = byte(width)
		p.keys[r][0], p.keys[r][1] = siphash.Hash128(k0, k1, in)
	}
	return p
}

// lowMask returns a mask of the low n bits, n in 0..64.
func lowMask(n uint) uint64 { return ^uint64(0) >> (64 - n) }

func (p *permutation) round(r int, x uint64) uint64 {
	var in [8]byte
	binary.LittleEndian.PutUint64(in[:], x)
	return siphash.Hash(p.keys[r][0], p.keys[r][1], in[:])
}

// Shifts by 64 yield 0 in Go, which makes split and join right for half
// widths of 0 and 64 too.

func (p *permutation) split(hi, lo uint64) (a, b uint64) {
	return (lo>>p.bBits | hi<<(64-p.bBits)) & p.aMask, lo & p.bMask
}

func (p *permutation) join(a, b uint64) (hi, lo uint64) {
	return a >> (64 - p.bBits), b | a<<p.bBits
}

func (p *permutation) forward(hi, lo uint64) (uint64, uint64) {
	a, b := p.split(hi, lo)
	for r := range permRounds {
		if r%2 == 0 {
			a ^= p.round(r, b) & p.aMask
		} else {
			b ^= p.round(r, a) & p.bMask
		}
	}
	return p.join(a, b)
}

func (p *permutation) inverse(hi, lo uint64) (uint64, uint64) {
	a, b := p.split(hi, lo)
	for r := permRounds - 1; r >= 0; r-- {
		if r%2 == 0 {
			a ^= p.round(r, b) & p.aMask
		} else {
			b ^= p.round(r, a) & p.bMask
		}
	}
	return p.join(a, b)
}
