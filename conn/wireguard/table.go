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
// the low bits of their ends say little; a multiplicative hash mixes them.
func slotOf(key uintptr) uint64 {
	return (uint64(key) * 0x9e3779b97f4a7c15) >> (64 - tableBits)
}

// bufferTable remembers a few facts about recently used buffers, by their
// bufferKey, in a fixed direct-mapped table: a write overwrites whatever
// the slot held, a lookup of a key that is no longer in its slot misses.
//
// One goroutine writes a given buffer's slot at a time (a buffer belongs
// to one stage of wireguard-go at a time, and the write happens before the
// buffer moves on), while other goroutines read other slots or the same
// slot for another key. Each slot is a tiny seqlock: the writer clears the
// key, stores the data and sets the key again; a reader that sees its key
// before and after reading the data saw data written for that key.
// Neither side allocates or blocks.
type bufferTable struct {
	slots [1 << tableBits]slot
}

type slot struct {
	key  atomic.Uintptr
	word atomic.Uint64 // the flow hash, on send
	meta atomic.Uint32 // a packed description, see the users
}

func (t *bufferTable) store(key uintptr, word uint64, meta uint32) {
	s := &t.slots[slotOf(key)]
	s.key.Store(0)
	s.word.Store(word)
	s.meta.Store(meta)
	s.key.Store(key)
}

func (t *bufferTable) load(key uintptr) (word uint64, meta uint32, ok bool) {
	if key == 0 {
		return 0, 0, false
	}
	s := &t.slots[slotOf(key)]
	if s.key.Load() != key {
		return 0, 0, false
	}
	word, meta = s.word.Load(), s.meta.Load()
	if s.key.Load() != key {
		return 0, 0, false
	}
	return word, meta, true
}

// forget clears key's slot if it still holds key, so a buffer that leaves
// the path is not matched by a stale entry later.
func (t *bufferTable) forget(key uintptr) {
	s := &t.slots[slotOf(key)]
	s.key.CompareAndSwap(key, 0)
}
