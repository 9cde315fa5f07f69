package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// passedPairs adds to the home router's firewall (testutil.HomeFirewall,
// in front of the client: newSites' r0 faces the client, r1 the server)
// a chain after it that notes each outer address pair of the tunnel that
// got through, per direction.
var passedPairs = testutil.HomeFirewallRules{Decls: `set up { type ipv6_addr . ipv6_addr; flags dynamic; }
	set down { type ipv6_addr . ipv6_addr; flags dynamic; }
	chain passed {
		type filter hook postrouting priority filter; policy accept;
		oifname "r1" udp sport 51820 udp dport 51820 add @up { ip6 saddr . ip6 daddr }
		oifname "r0" udp sport 51820 udp dport 51820 add @down { ip6 saddr . ip6 daddr }
	}`}

var (
	clientCanonical = netip.MustParseAddrPort("[2001:db8:a::1]:51820")
	serverCanonical = netip.MustParseAddrPort("[2001:db8:b::1]:51820")
	clientSpread    = netip.MustParsePrefix("2001:db8:a:1::/64")
	serverSpread    = netip.MustParsePrefix("2001:db8:b:1::/64")
	clientInner     = netip.MustParsePrefix("fd00:99::1/64")
	serverInner     = netip.MustParsePrefix("fd00:99::2/64")
)

// firewallEnds returns the client's and the server's config: the client
// spreads its sources over its prefix; the server over its own too when
// serverPrefix, else it has one address and spreads its destinations
// over the client's prefix only. One hash key; paths learned unless
// serverOpen (the server declares the client's range open, as -open).
func firewallEnds(serverPrefix, serverOpen bool) (client, server config) {
	hashKey, _ := hashKeyFromPSK(testPSK)
	base := config{
		name: "ft0", listenPort: 51820, psk: testPSK, hashKey: hashKey,
		symmetric: true, mtu: 1420, localRoute: true, batch: 32, gso: true,
		keepalive: 2 * time.Second,
	}
	client, server = base, base
	client.peer, server.peer = serverCanonical, clientCanonical
	client.addrs, server.addrs = []netip.Prefix{clientInner}, []netip.Prefix{serverInner}
	client.ours.Prefix, server.theirs.Prefix = clientSpread, clientSpread
	client.spread, server.spread = spreadSrc, spreadDst
	if serverPrefix {
		client.theirs.Prefix, server.ours.Prefix = serverSpread, serverSpread
		client.spread, server.spread = spreadBoth, spreadBoth
	}
	server.open = serverOpen
	return client, server
}

// outcome is what became of the inner flows opened from one side.
type outcome struct {
	pings int  // ping processes (each its own echo id) that got a reply, of pingFlows
	tcp   bool // a TCP connection carried its bytes both ways
	err   []string
}

const pingFlows = 5

// openFlows opens pingFlows ping flows, one process each so that each has
// its own echo id, and one TCP connection, from ns to the peer's inner
// address, all at once.
func openFlows(ns *testutil.Netns, to netip.Addr) outcome {
	var o outcome
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range pingFlows {
		wg.Go(func() {
			// -W: a reply later than a second is none; a black hole
			// costs the test three seconds, not a minute.
			out, err := ns.Output("ping", "-6", "-n", "-c", "3", "-i", "0.3", "-W", "1", to.String())
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				o.pings++
			} else {
				o.err = append(o.err, fmt.Sprintf("ping %d: %v: %s", i, err, lastLine(out)))
			}
		})
	}
	wg.Go(func() {
		err := tcpEchoWithin(ns, netip.AddrPortFrom(to, 7000), 100<<10, 6*time.Second)
		mu.Lock()
		defer mu.Unlock()
		o.tcp = err == nil
		if err != nil {
			o.err = append(o.err, "tcp: "+err.Error())
		}
	})
	wg.Wait()
	return o
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// firewallSeen is what the router's firewall counted.
type firewallSeen struct {
	dropped  uint64
	up, down [][2]netip.Addr // outer address pairs that got through
}

func readFirewall(t *testing.T, router *testutil.Netns) firewallSeen {
	t.Helper()
	var seen firewallSeen
	seen.dropped = testutil.NftCounter(t, router, "dropped")
	for _, set := range []struct {
		name  string
		pairs *[][2]netip.Addr
	}{{"up", &seen.up}, {"down", &seen.down}} {
		var s struct {
			Nftables []struct {
				Set *struct {
					Elem []struct {
						Concat []netip.Addr `json:"concat"`
					} `json:"elem"`
				} `json:"set"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(router.Run(t, "nft", "-j", "list", "set", "inet", "home", set.name)), &s); err != nil {
			t.Fatalf("nft set %s: %v", set.name, err)
		}
		for _, o := range s.Nftables {
			if o.Set == nil {
				continue
			}
			for _, e := range o.Set.Elem {
				if len(e.Concat) == 2 {
					*set.pairs = append(*set.pairs, [2]netip.Addr{e.Concat[0], e.Concat[1]})
				}
			}
		}
	}
	return seen
}

// firewallRun is one run through the home firewall: the flows opened
// from each side, server's first, then what the ends and the firewall
// counted.
type firewallRun struct {
	fromServer, fromClient outcome
	client, server         Stats
	seen                   firewallSeen
}

func runThroughFirewall(t *testing.T, serverPrefix, serverOpen bool) firewallRun {
	s := newSites(t)
	testutil.HomeFirewall(t, s.router, "r0", clientCanonical, passedPairs)
	// The routed path first: until the router's links have finished
	// duplicate address detection, it resolves no neighbour, and the
	// first second of traffic would be lost to that, not to the firewall.
	for _, e := range []struct {
		ns *testutil.Netns
		to netip.AddrPort
	}{{s.client, serverCanonical}, {s.server, clientCanonical}} {
		testutil.WaitFor(t, "the routed path to "+e.to.Addr().String(), func() bool {
			_, err := e.ns.Output("ping", "-6", "-n", "-c", "1", "-W", "1", e.to.Addr().String())
			return err == nil
		})
	}
	cfgC, cfgS := firewallEnds(serverPrefix, serverOpen)
	c := startEnd(t, s.client, cfgC)
	srv := startEnd(t, s.server, cfgS)
	tcpEchoServer(t, s.client, netip.AddrPortFrom(clientInner.Addr(), 7000))
	tcpEchoServer(t, s.server, netip.AddrPortFrom(serverInner.Addr(), 7000))

	var r firewallRun
	// The server's flows first: the client has sent nothing yet but its
	// keepalives, so no spread pair is open in the firewall.
	r.fromServer = openFlows(s.server, clientInner.Addr())
	r.fromClient = openFlows(s.client, serverInner.Addr())
	r.client, r.server, r.seen = c.stats(), srv.stats(), readFirewall(t, s.router)
	for _, e := range []struct {
		name string
		o    outcome
	}{{"server", r.fromServer}, {"client", r.fromClient}} {
		t.Logf("flows opened by the %s: ping %d/%d, TCP %v %v", e.name, e.o.pings, pingFlows, e.o.tcp, e.o.err)
	}
	for _, e := range []struct {
		name string
		s    Stats
	}{{"client", r.client}, {"server", r.server}} {
		t.Logf("%s: sent %d, waiting %d, probes %d, paths opened %d, addresses used %d, keepalives sent %d received %d, replays dropped %d",
			e.name, e.s.Sent, e.s.Conn.SentWaiting, e.s.Conn.SentProbes, e.s.Conn.PathsOpened, e.s.AddressesUsed,
			e.s.KeepalivesSent, e.s.KeepalivesReceived, e.s.DroppedReplay)
	}
	t.Logf("firewall: %d dropped; %d outer pairs passed client to server, %d server to client", r.seen.dropped, len(r.seen.up), len(r.seen.down))
	return r
}

// TestFirewall runs flowtun through a home router's stateful firewall in
// front of the client (RFC 6092: only the canonical address and port
// open inbound), with spreading on at both ends.
//
// Learning paths, every flow opened from either side completes, and the
// client's flows end up on their own pairs. With the server declaring
// the client's range open (-open), what issue 12 found before paths were
// learned: the server's flows go on pairs the client never used, and the
// firewall drops them all.
func TestFirewall(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	t.Run("learned", func(t *testing.T) {
		r := runThroughFirewall(t, true, false)
		checkAllComplete(t, r)
		if r.client.Conn.PathsOpened == 0 || r.client.AddressesUsed < 2 {
			t.Errorf("the client opened %d paths and sent from %d addresses; its flows stayed on the canonical pair",
				r.client.Conn.PathsOpened, r.client.AddressesUsed)
		}
		if r.server.Conn.PathsOpened == 0 {
			t.Error("the server opened no path")
		}
		// The first keepalive of the end that starts first finds no
		// peer yet; the other's arrives.
		if r.client.KeepalivesSent == 0 || r.client.KeepalivesReceived+r.server.KeepalivesReceived == 0 {
			t.Errorf("keepalives: the client sent %d, the ends received %d and %d",
				r.client.KeepalivesSent, r.client.KeepalivesReceived, r.server.KeepalivesReceived)
		}
		checkPairs(t, r.seen, false)
	})
	t.Run("server open, before", func(t *testing.T) {
		r := runThroughFirewall(t, true, true)
		// A server's flow gets through only if its pair is one the
		// client's own traffic opened (its TUN device's router
		// solicitations and MLD reports, sent with probe copies): 1 in
		// 1024 for each pair of flows. So at most one may, not more.
		passed := r.fromServer.pings
		if r.fromServer.tcp {
			passed++
		}
		if passed > 1 {
			t.Errorf("flows opened by the server: ping %d/%d, TCP %v; want them black-holed by the firewall",
				r.fromServer.pings, pingFlows, r.fromServer.tcp)
		}
		if r.seen.dropped == 0 {
			t.Error("the firewall dropped nothing")
		}
	})
}

// TestFirewallServerWithoutPrefix runs the common setup through the home
// firewall: a server with one address and no prefix, a client spreading
// its sources. The server answers each flow on the pair it came on, so
// both directions are isolated: each uses many outer pairs.
func TestFirewallServerWithoutPrefix(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	r := runThroughFirewall(t, false, false)
	checkAllComplete(t, r)
	if r.server.Conn.PathsOpened == 0 {
		t.Error("the server learned no path")
	}
	checkPairs(t, r.seen, true)
}

func checkAllComplete(t *testing.T, r firewallRun) {
	t.Helper()
	for _, e := range []struct {
		name string
		o    outcome
	}{{"server", r.fromServer}, {"client", r.fromClient}} {
		if e.o.pings != pingFlows || !e.o.tcp {
			t.Errorf("flows opened by the %s: ping %d/%d, TCP %v; want all complete: %v", e.name, e.o.pings, pingFlows, e.o.tcp, e.o.err)
		}
	}
}

// checkPairs checks that each direction used more than one outer address
// pair through the firewall (the tunnel carried 12 inner flows), and,
// for a server with one address, that its address is on every pair.
func checkPairs(t *testing.T, seen firewallSeen, oneAddress bool) {
	t.Helper()
	if len(seen.up) < 2 || len(seen.down) < 2 {
		t.Errorf("outer pairs through the firewall: %d client to server, %d server to client; want several each way",
			len(seen.up), len(seen.down))
	}
	if !oneAddress {
		return
	}
	for _, p := range seen.up {
		if p[1] != serverCanonical.Addr() {
			t.Errorf("client to server on %v -> %v, not to the server's one address", p[0], p[1])
		}
	}
	for _, p := range seen.down {
		if p[0] != serverCanonical.Addr() {
			t.Errorf("server to client on %v -> %v, not from the server's one address", p[0], p[1])
		}
	}
}
