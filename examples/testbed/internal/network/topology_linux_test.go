package network

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestTopologies builds each address plan with the router in a namespace
// (no wire, no qdisc) and checks what makes it that plan. New itself
// proves that the client reaches the server and hears its replies.
func TestTopologies(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	for _, tool := range []string{"irtt", "ethtool", "nft", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: run scripts/install-deps", tool)
		}
	}
	for _, tc := range []struct {
		name  string
		opts  Options
		check func(t *testing.T, topo *Topology)
	}{
		{"IPv6 sites routed", Options{}, nil},
		{"IPv4", Options{Outer: OuterIPv4}, nil},
		// The router has no route to 10.0.0.0/24: the server's replies
		// reach the client only through the NAT's mapping.
		{"IPv4 behind the NAT", Options{Outer: OuterIPv4, NAT: true}, checkNAT},
		{"on-link client", Options{OnLink: true, ProxyDelay: new(time.Duration)}, checkOnLink}, // answers at once
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Self, opts.Wire = os.Args[0], WireNone
			topo, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := topo.Close(); err != nil {
					t.Error(err)
				}
			})
			if tc.check != nil {
				tc.check(t, topo)
			}
		})
	}
}

// checkNAT: the router knows no route to the client's private address,
// and the NAT's conntrack saw the client's flow translated.
func checkNAT(t *testing.T, topo *Topology) {
	if err := topo.Router.Run("ping", "-c", "1", "-W", "1", topo.ClientHost.String()); err == nil {
		t.Errorf("the router reached the client's private address %v: the NAT is not needed", topo.ClientHost)
	}
	out, err := topo.Home.Output("nft", "list", "table", "ip", natTable)
	if err != nil || !bytes.Contains(out, []byte("masquerade")) {
		t.Errorf("the home router's NAT table: %s, %v", out, err)
	}
}

// checkOnLink: the router has no route to the client's range, and
// resolves a range address by neighbour discovery, which the client's
// proxy entries answer; an address outside the range stays unresolved.
func checkOnLink(t *testing.T, topo *Topology) {
	if out, err := topo.Router.Output("ip", "-6", "route", "show", "match", topo.ClientSpread.Addr().String()); err != nil || bytes.Contains(out, []byte("via")) {
		t.Errorf("the router routes the on-link client's range: %s, %v", out, err)
	}
	inRange, outside := "2001:db8:0:1:f::400", "2001:db8:0:1:e::400"
	for _, a := range []string{inRange, outside} {
		// The client does not answer the echo (no local route for the
		// range without a tunnel); only neighbour discovery matters.
		topo.Router.Run("ping", "-c", "1", "-W", "2", a)
	}
	n, err := topo.CountNeighbours()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := topo.Router.Output("ip", "-6", "neigh", "show", "dev", RouterClientIf)
	if n.InRange != 1 {
		t.Errorf("%d range addresses in the router's neighbour table, want 1 (%s):\n%s", n.InRange, inRange, out)
	}
	resolved := func(a string) bool {
		entry, _ := topo.Router.Output("ip", "-6", "neigh", "show", "dev", RouterClientIf, "to", a)
		return bytes.Contains(entry, []byte("lladdr"))
	}
	if !resolved(inRange) {
		t.Errorf("the router did not resolve %s in the range:\n%s", inRange, out)
	}
	if resolved(outside) {
		t.Errorf("the router resolved %s outside the range:\n%s", outside, out)
	}
}
