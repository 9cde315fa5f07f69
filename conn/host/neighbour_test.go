package host

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
)

func TestRangeAddrsCap(t *testing.T) {
	for _, tt := range []struct {
		name   string
		bits   int
		layout flowaddr.Layout
		tooBig bool
	}{
		{"home-lan", 4, flowaddr.LayoutContiguous, false},
		{"scattered", 6, flowaddr.LayoutScattered, false},
		{"at-the-cap", 12, flowaddr.LayoutContiguous, false},
		{"over-the-cap", 13, flowaddr.LayoutContiguous, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:5::/64"), Bits: tt.bits, Layout: tt.layout})
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := rangeAddrs(m)
			if tt.tooBig {
				if !errors.Is(err, ErrRangeTooLarge) || !strings.Contains(err.Error(), "neighbour table") {
					t.Fatalf("error %v: want ErrRangeTooLarge saying why (the router's neighbour table)", err)
				}
				// The refusal comes before anything touches the system.
				if _, err := AddNeighbourProxies("eth0", m); !errors.Is(err, ErrRangeTooLarge) {
					t.Fatalf("AddNeighbourProxies: %v, want ErrRangeTooLarge", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			seen := map[netip.Addr]bool{}
			for b, a := range addrs {
				if got, ok := m.BucketOf(a.As16()); !ok || int(got) != b || seen[a] {
					t.Fatalf("address %d, %v: bucket %d (ok %v), seen before %v", b, a, got, ok, seen[a])
				}
				seen[a] = true
			}
			if len(addrs) != 1<<tt.bits {
				t.Fatalf("%d addresses, want %d", len(addrs), 1<<tt.bits)
			}
		})
	}
	if _, err := AddNeighbourProxies("eth0", nil); err == nil || !strings.Contains(err.Error(), "no range") {
		t.Errorf("AddNeighbourProxies with a nil mapper: %v, want an error saying there is no range", err)
	}
}
