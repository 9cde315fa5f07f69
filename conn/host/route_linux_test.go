package host

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

func localRoutes(t *testing.T, ns *testutil.Netns) string {
	t.Helper()
	return ns.Run(t, "ip", "-6", "route", "show", "table", "local", "type", "local", "dev", "lo")
}

func TestAddLocalRouteAddsAndRemoves(t *testing.T) {
	ns := testutil.NewNetns(t)
	prefix := netip.MustParsePrefix("2001:db8:b::/64")
	const shown = "local 2001:db8:b::/64"

	var remove, again func() error
	if err := ns.Do(func() (err error) {
		if remove, err = AddLocalRoute(prefix); err != nil {
			return err
		}
		again, err = AddLocalRoute(prefix)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if out := localRoutes(t, ns); strings.Count(out, shown) != 1 {
		t.Fatalf("after adding twice, table local has:\n%s\nwant one %q", out, shown)
	}

	// The route works: a socket on [::] gets datagrams to the prefix.
	uc := listenUDP(t, ns, netip.AddrPort{})
	dst := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::42"), localAddrPort(uc).Port())
	if err := ns.Do(func() error {
		send, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer send.Close()
		_, err = send.Write([]byte("via the route"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, _, err := uc.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "via the route" {
		t.Fatalf("read %q, %v; want the datagram sent to %v", buf[:n], err, dst)
	}

	// The second add found the route there: its remove leaves it.
	if err := again(); err != nil {
		t.Fatal(err)
	}
	if out := localRoutes(t, ns); !strings.Contains(out, shown) {
		t.Fatalf("the second add's remove deleted the first add's route:\n%s", out)
	}
	// remove runs outside the namespace's thread and still acts there.
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if out := localRoutes(t, ns); strings.Contains(out, shown) {
		t.Fatalf("route still there after remove:\n%s", out)
	}
}

func TestRemoveLocalRoute(t *testing.T) {
	ns := testutil.NewNetns(t)
	prefix := netip.MustParsePrefix("2001:db8:b:1::/64")
	ns.Run(t, "ip", "-6", "route", "add", "local", prefix.String(), "dev", "lo")
	for _, name := range []string{"present", "absent"} {
		if err := ns.Do(func() error { return RemoveLocalRoute(prefix) }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out := localRoutes(t, ns); strings.Contains(out, prefix.String()) {
			t.Fatalf("%s: route still there:\n%s", name, out)
		}
	}
}

func TestLocalRouteRefusesNonIPv6(t *testing.T) {
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("::ffff:192.0.2.0/120")} {
		if _, err := AddLocalRoute(p); err == nil {
			t.Errorf("AddLocalRoute(%v): no error", p)
		}
		if err := RemoveLocalRoute(p); err == nil {
			t.Errorf("RemoveLocalRoute(%v): no error", p)
		}
	}
}

func TestRouteErrorSaysWhatIsMissing(t *testing.T) {
	prefix := netip.MustParsePrefix("2001:db8:b::/64")
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"eperm", unix.EPERM, "needs CAP_NET_ADMIN"},
		{"no-ipv6", unix.EAFNOSUPPORT, "IPv6 is disabled"},
		{"other", unix.ENODEV, "2001:db8:b::/64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := routeError("add local route for", prefix, tt.err)
			if !strings.Contains(err.Error(), tt.want) || !errors.Is(err, tt.err) {
				t.Errorf("%v: does not say %q or does not wrap %v", err, tt.want, tt.err)
			}
		})
	}
}
