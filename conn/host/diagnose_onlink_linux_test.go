package host

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

func wantDetail(t *testing.T, r Report, check, has string) {
	t.Helper()
	if f, _ := r.Find(check); !strings.Contains(f.Detail, has) {
		t.Errorf("%q detail %q does not say %q", check, f.Detail, has)
	}
}

// TestDiagnoseOnLink follows the on-link LAN from no proxies to proxies in
// place, and a link whose proxy_ndp is turned off under its entries.
func TestDiagnoseOnLink(t *testing.T) {
	lan := newOnLinkLAN(t)
	cfg := conn.Config{Range: conn.Range{Prefix: lanPrefix, Bits: 4}, Port: 51820}

	r := diagnoseIn(t, lan.host, cfg)
	wantFinding(t, r, CheckReachability, Warn, "host.AddNeighbourProxies")
	wantFinding(t, r, CheckReachability, Warn, "ip -6 route add local 2001:db8:5::10/124 dev lo")
	wantDetail(t, r, CheckReachability, "on-link on eth0 (connected route 2001:db8:5::/64, no gateway)")
	wantFinding(t, r, CheckNeighbours, Block, "ip -6 neigh add proxy ADDRESS dev eth0")
	wantDetail(t, r, CheckNeighbours, "0 of the 16 addresses")
	wantFinding(t, r, CheckLocalRoute, OK, "")
	if !r.Blocking() {
		t.Errorf("missing neighbour proxies do not block:\n%s", r)
	}
	t.Logf("on-link, no proxies:\n%s", r)

	lan.addProxies(t)
	r = diagnoseIn(t, lan.host, cfg)
	wantFinding(t, r, CheckReachability, OK, "")
	wantFinding(t, r, CheckNeighbours, OK, "")
	wantDetail(t, r, CheckNeighbours, "all 16 addresses")
	if r.Blocking() {
		t.Errorf("blocks with the proxies and the local route in place:\n%s", r)
	}
	t.Logf("on-link, proxies in place:\n%s", r)

	lan.host.Run(t, "sysctl", "-qw", "net.ipv6.conf.eth0.proxy_ndp=0")
	r = diagnoseIn(t, lan.host, cfg)
	wantFinding(t, r, CheckNeighbours, Block, "proxy_ndp=1")
	wantDetail(t, r, CheckNeighbours, "proxy_ndp or forwarding is off")
}

// TestDiagnoseOnLinkLocalRoute checks that on-link the local route is
// asked for the range, and that one for the whole prefix is refused.
func TestDiagnoseOnLinkLocalRoute(t *testing.T) {
	router, host := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, router, lanRouterDev, host, lanHostLink)
	host.Run(t, "ip", "-6", "addr", "add", "2001:db8:5::2/64", "dev", lanHostLink, "nodad")
	cfg := conn.Config{Range: conn.Range{Prefix: lanPrefix, Bits: 4}, Port: 51820}

	wantFinding(t, diagnoseIn(t, host, cfg), CheckLocalRoute, Block, "ip -6 route add local 2001:db8:5::10/124 dev lo")

	scattered := cfg
	scattered.Layout = flowaddr.LayoutScattered
	wantFinding(t, diagnoseIn(t, host, scattered), CheckLocalRoute, Block, "ADDRESS/128 dev lo for each of the 16 addresses")

	host.Run(t, "ip", "-6", "route", "add", "local", lanPrefix.String(), "dev", "lo")
	r := diagnoseIn(t, host, cfg)
	wantFinding(t, r, CheckLocalRoute, Warn, "ip -6 route del local 2001:db8:5::/64 dev lo table local")
	wantDetail(t, r, CheckLocalRoute, "cannot reach them")
}

// TestDiagnoseOnLinkRangeSize checks what Diagnose says of ranges that
// crowd the router's neighbour table.
func TestDiagnoseOnLinkRangeSize(t *testing.T) {
	lan := newOnLinkLAN(t)

	r := diagnoseIn(t, lan.host, conn.Config{Range: conn.Range{Prefix: lanPrefix, Bits: 13}, Port: 51820})
	wantFinding(t, r, CheckReachability, Block, "Bits 4")
	wantDetail(t, r, CheckReachability, "neighbour table")

	cfg := conn.Config{Range: conn.Range{Prefix: lanPrefix, Bits: 8}, Port: 51820}
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: lanPrefix, Bits: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := lan.host.Do(func() error {
		p, err := AddNeighbourProxies(lanHostLink, m)
		if err == nil {
			t.Cleanup(func() { p.Remove() })
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r = diagnoseIn(t, lan.host, cfg)
	wantFinding(t, r, CheckNeighbours, OK, "")
	wantFinding(t, r, CheckReachability, Warn, "Bits 4 (16 addresses) on a home LAN")
	wantDetail(t, r, CheckReachability, "range's 256 addresses")
}

// TestDiagnoseRouted checks a prefix routed to the host, outside its
// on-link subnet: the local route for the whole prefix, and no neighbour
// proxies.
func TestDiagnoseRouted(t *testing.T) {
	router, host := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, router, lanRouterDev, host, lanHostLink)
	host.Run(t, "ip", "-6", "addr", "add", "2001:db8:5::2/64", "dev", lanHostLink, "nodad")
	host.Run(t, "ip", "-6", "route", "add", "default", "via", lanRouter.String(), "dev", lanHostLink)
	routed := netip.MustParsePrefix("2001:db8:6::/64")
	cfg := conn.Config{Range: conn.Range{Prefix: routed, Bits: 4}, Port: 51820}

	r := diagnoseIn(t, host, cfg)
	wantFinding(t, r, CheckLocalRoute, Block, "ip -6 route add local 2001:db8:6::/64 dev lo")

	host.Run(t, "ip", "-6", "route", "add", "local", routed.String(), "dev", "lo")
	r = diagnoseIn(t, host, cfg)
	wantFinding(t, r, CheckLocalRoute, OK, "")
	wantFinding(t, r, CheckReachability, Info, "route 2001:db8:6::/64 via")
	if f, ok := r.Find(CheckNeighbours); ok {
		t.Errorf("a routed prefix gets a neighbour proxy finding: %+v", f)
	}
	if r.Blocking() {
		t.Errorf("blocks:\n%s", r)
	}
}
