package conn

import (
	"net/netip"
	"testing"
)

func TestBadSource(t *testing.T) {
	a := netip.MustParseAddr
	for _, tt := range []struct {
		src, dst  string
		bad, wire bool // badSource, badSourceFromWire
	}{
		{"2001:db8:a::1", "2001:db8:b::5", false, false},
		{"fe80::1", "2001:db8:b::5", false, false},
		{"::ffff:127.0.0.1", "2001:db8:b::5", true, true},
		{"127.0.0.1", "2001:db8:b::5", true, true}, // a mapped source, unmapped by the socket
		{"192.0.2.7", "198.51.100.1", false, false},
		{"::ffff:192.0.2.7", "::ffff:198.51.100.1", false, false},
		{"192.0.2.7", "224.0.0.1", true, true},
		{"192.0.2.7", "255.255.255.255", true, true},
		{"2001:db8:a::1", "198.51.100.1", true, true},
		{"::", "2001:db8:b::5", true, true},
		{"ff02::1", "2001:db8:b::5", true, true},
		{"2001:db8:a::1", "ff02::1", true, true},
		{"::1", "2001:db8:b::5", false, true},
		{"2001:db8:a::1", "::1", false, true},
	} {
		src, dst := a(tt.src), a(tt.dst)
		if got := badSource(src, dst); got != tt.bad {
			t.Errorf("badSource(%v, %v) = %v, want %v", src, dst, got, tt.bad)
		}
		if got := badSourceFromWire(src, dst); got != tt.wire {
			t.Errorf("badSourceFromWire(%v, %v) = %v, want %v", src, dst, got, tt.wire)
		}
	}
}
