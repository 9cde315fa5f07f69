package hash

import "testing"

func TestStatic(t *testing.T) {
	h := NewSipHash24(refKey)
	s := NewStatic(h)
	m := refInput()
	want := sipHash24Vectors[InputLen]
	for _, now := range []int64{-1, 0, 1, 1_700_000_000e9, 1<<63 - 1} {
		if got := s.FlowHash(m, now); got != want {
			t.Errorf("FlowHash at %d = %#016x, want %#016x", now, got, want)
		}
	}
	if s.Hasher() != Hasher(h) {
		t.Errorf("Hasher() does not return the policy's Hasher")
	}
}

func TestNewStaticNilPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Errorf("NewStatic(nil) did not panic")
		}
	}()
	NewStatic(nil)
}

func TestStaticFlowHashDoesNotAllocate(t *testing.T) {
	var s Policy = NewStatic(NewSipHash24(refKey))
	m := refInput()
	var sink uint64
	if n := testing.AllocsPerRun(1000, func() { sink += s.FlowHash(m, 1) }); n != 0 {
		t.Errorf("%v allocations per FlowHash, want 0", n)
	}
	_ = sink
}
