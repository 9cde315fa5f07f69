package wireguard

import (
	"sync/atomic"
	"unsafe"
)

// tableBits sizes the buffer tables: 2^16 slots (1.5 MB a table), far
// more than the buffers wireguard-go keeps between a TUN read and the
// send (its queues hold 1024 elements per stage). With 2^13 slots, iperf3
// with four TCP streams through the tunnel lost the match for 4% of the
// datagrams (BenchmarkIperf3 in examples/wgspread, Bind.Stats
// SentUnmatched), and every miss also split a GSO run; with 2^16, none.
const tableBits = 16

// bufferKey identifies a buffer by the end of its backing array. wireguard-go
// reslices a buffer from the front (the TUN read starts at an offset, the
// ciphertext starts at byte 0, the plaintext on receive at byte 16) but
// never changes where the array ends, so the end survives every reslice
// while the start does not.
func bufferKey(buf []byte) uintptr {
	c := cap(buf)
	if c == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(buf[:c]))) + uintptr(c)
}

// slotOf spreads keys over the table: buffers are arrays of 64 KiB, so
// the low bits of their addresses say little; a multiplicative hash mixes
// them.
func slotOf(key uintptr) uint64 {
	return (uint64(key) * 0x9e3779b97f4a7c15) >> (64 - tableBits)
}

// bufferTable remembers a few facts about recently used buffers, by a key
// made from their address, in a fixed direct-mapped table: a write
// overwrites whatever the slot held, a lookup of a key that is no longer
// in its slot misses.
//
// Each record carries a generation, unique to the write (until the 32-bit
// counter wraps), and each slot is a tiny seqlock on it: a writer claims
// the slot by setting the generation to slotBusy, stores key and data,
// and publishes a fresh generation; a reader that sees the same
// generation before and after reading the data saw data written for it.
// [bufferTable.take] consumes the record by swapping its generation for
// slotEmpty, so of two lookups of one record at most one gets it.
// Neither side allocates or blocks: a writer that finds the slot claimed
// by another writer drops its record, whose lookup then misses.
type bufferTable struct {
	gens  atomic.Uint32 // the last generation handed out
	slots [1 << tableBits]slot
}

type slot struct {
	key  atomic.Uintptr
	word atomic.Uint64 // the flow hash, on send
	meta atomic.Uint32 // a packed description, see the users
	gen  atomic.Uint32 // slotEmpty, slotBusy, or the record's generation
}

const (
	slotEmpty uint32 = 0
	slotBusy  uint32 = 1<<32 - 1
)

// store records word and meta under key, replacing the slot's record.
// It reports false when another writer held the slot.
func (t *bufferTable) store(key uintptr, word uint64, meta uint32) bool {
	s := &t.slots[slotOf(key)]
	for {
		g := s.gen.Load()
		if g == slotBusy {
			return false
		}
		// Fails only when a take consumed the record or another writer
		// claimed the slot in between; look again.
		if s.gen.CompareAndSwap(g, slotBusy) {
			break
		}
	}
	s.key.Store(key)
	s.word.Store(word)
	s.meta.Store(meta)
	s.gen.Store(t.nextGen())
	return true
}

func (t *bufferTable) nextGen() uint32 {
	for {
		if g := t.gens.Add(1); g != slotEmpty && g != slotBusy {
			return g
		}
	}
}

// load returns key's record and leaves it in place.
func (t *bufferTable) load(key uintptr) (word uint64, meta uint32, ok bool) {
	if key == 0 {
		return 0, 0, false
	}
	s := &t.slots[slotOf(key)]
	gen := s.gen.Load()
	if gen == slotEmpty || gen == slotBusy || s.key.Load() != key {
		return 0, 0, false
	}
	word, meta = s.word.Load(), s.meta.Load()
	if s.gen.Load() != gen {
		return 0, 0, false
	}
	return word, meta, true
}

// take returns key's record and forgets it: a record is used once. A
// record that was consumed, replaced or is being written misses.
func (t *bufferTable) take(key uintptr) (word uint64, meta uint32, ok bool) {
	if key == 0 {
		return 0, 0, false
	}
	s := &t.slots[slotOf(key)]
	gen := s.gen.Load()
	if gen == slotEmpty || gen == slotBusy || s.key.Load() != key {
		return 0, 0, false
	}
	word, meta = s.word.Load(), s.meta.Load()
	if !s.gen.CompareAndSwap(gen, slotEmpty) {
		return 0, 0, false
	}
	return word, meta, true
}
