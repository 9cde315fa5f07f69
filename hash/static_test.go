package hash

import (
	"encoding/binary"
	"testing"
)

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

// lastWord is a Hasher that is not one of the package's: the policies
// must call it through the interface.
type lastWord struct{}

func (lastWord) Sum64(in Input) uint64 { return binary.BigEndian.Uint64(in[InputLen-8:]) }

// TestStaticUsesItsHasher checks that Static hashes with its own Hasher,
// whether it is the default one, which the policies call directly, or
// any other.
func TestStaticUsesItsHasher(t *testing.T) {
	m := refInput()
	tests := []struct {
		name string
		h    Hasher
		want uint64
	}{
		{"SipHash24", NewSipHash24(refKey), sipHash24Vectors[InputLen]},
		{"SipHash13", NewSipHash13(refKey), leHex(t, sipHash13Vectors[InputLen])},
		{"own Hasher", lastWord{}, 0x2021222324252627},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewStatic(tt.h).FlowHash(m, 0); got != tt.want {
				t.Errorf("FlowHash = %#016x, want %#016x", got, tt.want)
			}
		})
	}
}
