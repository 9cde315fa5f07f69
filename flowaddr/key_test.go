package flowaddr_test

import (
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
)

// TestCanonicalize checks the canonical form on keys that differ in
// every place the order looks at, in both directions: Canonicalize and
// Canonical agree, both directions get one key, and it is the direction
// that sorts lower.
func TestCanonicalize(t *testing.T) {
	lo, hi := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	hiTop := netip.MustParseAddr("2001:db9::1") // differs in the first half only
	lo4, hi4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	tests := []struct {
		name string
		k    flowaddr.Key // in canonical form
	}{
		{"addresses differ in the low half", key(lo, hi, 6, 40000, 443)},
		{"addresses differ in the high half", key(lo, hiTop, 6, 443, 40000)},
		{"IPv4", key(lo4, hi4, 17, 53, 53)},
		{"same address, ports differ", key(lo, lo, 17, 53, 40000)},
		{"same endpoint", key(lo, lo, 17, 53, 53)},
		{"fragment", flowaddr.Key{Src: lo.As16(), Dst: hi.As16(), Proto: 17, Flags: flowaddr.FlagFragment}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []flowaddr.Key{tt.k, tt.k.Reverse()} {
				if got := k.Canonical(); got != tt.k {
					t.Errorf("Canonical of %v = %v, want %v", fmtKey(k), fmtKey(got), fmtKey(tt.k))
				}
				in := k
				in.Canonicalize()
				if in != tt.k {
					t.Errorf("Canonicalize of %v = %v, want %v", fmtKey(k), fmtKey(in), fmtKey(tt.k))
				}
			}
		})
	}
}
