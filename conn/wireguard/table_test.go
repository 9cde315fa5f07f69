package wireguard

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestTableTakeConcurrent stores records under two keys that share a slot
// from two goroutines while two others take one of the keys: every record
// taken must be whole (its word and meta written together, for that key)
// and taken once.
func TestTableTakeConcurrent(t *testing.T) {
	var tb bufferTable
	const key = uintptr(0x7f010000) // fits a 32-bit uintptr: the test builds on linux/386 too
	other := key + 1<<16
	for slotOf(other) != slotOf(key) {
		other += 1 << 16
	}
	const n = 20000
	var writers, takers sync.WaitGroup
	var done atomic.Bool
	for _, k := range []uintptr{key, other} {
		writers.Go(func() {
			for i := uint64(1); i <= n; i++ {
				tb.store(k, i<<32|uint64(k&0xffff_ffff), uint32(i))
				runtime.Gosched() // two cores: take turns with the takers
			}
		})
	}
	var mu sync.Mutex
	seen := map[uint64]bool{}
	for range 2 {
		takers.Go(func() {
			for !done.Load() {
				word, meta, ok := tb.take(key)
				if !ok {
					runtime.Gosched()
					continue
				}
				if word>>32 != uint64(meta) || uintptr(word&0xffff_ffff) != key&0xffff_ffff {
					t.Errorf("took a torn or foreign record: word %#x, meta %d", word, meta)
					return
				}
				mu.Lock()
				if seen[word] {
					t.Errorf("record %d taken twice", meta)
				}
				seen[word] = true
				mu.Unlock()
			}
		})
	}
	writers.Wait()
	done.Store(true)
	takers.Wait()
	t.Logf("%d of %d records taken", len(seen), n)
	if len(seen) == 0 {
		t.Errorf("no record taken: the test saw no concurrency")
	}
}
