package host

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNeighbourProxiesRefuseLinks checks the errors that come before any
// change, which need no root: a missing interface, and loopback.
func TestNeighbourProxiesRefuseLinks(t *testing.T) {
	m := lanMapper(t)
	for _, tt := range []struct{ link, want string }{
		{"nosuch0", `no interface "nosuch0" (ip link show lists them)`},
		{"lo", "does no neighbour discovery"},
	} {
		p, err := AddNeighbourProxies(tt.link, m)
		if err == nil {
			p.Remove()
			t.Fatalf("AddNeighbourProxies(%q): no error", tt.link)
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("AddNeighbourProxies(%q): %v; want it to say %q", tt.link, err, tt.want)
		}
	}
}

func TestNeighbourErrorsSayWhatIsMissing(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"netlink-eperm", neighbourError("eth0", "add a proxy entry for 2001:db8:5::10", unix.EPERM), "needs CAP_NET_ADMIN"},
		{"no-ipv6", neighbourError("eth0", "add a proxy entry", unix.EAFNOSUPPORT), "IPv6 is disabled"},
		{"sysctl-denied", sysctlError("net/ipv6/conf/eth0/proxy_ndp", "open", os.ErrPermission), "net.ipv6.conf.eth0.proxy_ndp: open needs CAP_NET_ADMIN"},
		{"other", neighbourError("eth0", "add a proxy entry", unix.ENOBUFS), "neighbour proxies on eth0: add a proxy entry"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.err.Error(), tt.want) || errors.Unwrap(tt.err) == nil {
				t.Errorf("%v: does not say %q or wraps nothing", tt.err, tt.want)
			}
		})
	}
}

func TestCoveringPrefix(t *testing.T) {
	for _, tt := range []struct{ a, b, want string }{
		{"2001:db8:5::10", "2001:db8:5::1f", "2001:db8:5::10/124"},
		{"2001:db8:5::400", "2001:db8:5::7ff", "2001:db8:5::400/118"},
		{"2001:db8:5::f", "2001:db8:5::10", "2001:db8:5::/123"},
		{"2001:db8:5::1", "2001:db8:5::1", "2001:db8:5::1/128"},
	} {
		got := coveringPrefix(netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b))
		if got.String() != tt.want {
			t.Errorf("coveringPrefix(%s, %s) = %v, want %s", tt.a, tt.b, got, tt.want)
		}
	}
}
