package main

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

// TestTunnel runs a tunnel between two namespaces in each spread mode and
// carries TCP and UDP over IPv4 and IPv6 inside, both ways; with
// spreading, the inner flows must leave from many outer addresses.
func TestTunnel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modeA  spreadMode
		outer4 bool
		ports  bool // the ends spread over ports too (over ports alone on IPv4)
	}{
		{"off", spreadOff, false, false},
		{"off over IPv4", spreadOff, true, false},
		{"src", spreadSrc, false, false},
		{"dst", spreadDst, false, false},
		{"both", spreadBoth, false, false},
		{"ports over IPv4", spreadBoth, true, true},
		{"src ports over IPv4", spreadSrc, true, true},
		{"addresses and ports", spreadBoth, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTwoHosts(t)
			cfgA, cfgB := endConfigs(tc.modeA, tc.outer4)
			if tc.ports {
				withPorts(&cfgA, &cfgB, tc.outer4)
			}
			a := startEnd(t, h.a, cfgA)
			b := startEnd(t, h.b, cfgB)

			// TCP both ways, each way over both inner families, at once.
			const echoPort = 7000
			for _, addr := range []netip.Prefix{innerA4, innerA6} {
				tcpEchoServer(t, h.a, netip.AddrPortFrom(addr.Addr(), echoPort))
			}
			for _, addr := range []netip.Prefix{innerB4, innerB6} {
				tcpEchoServer(t, h.b, netip.AddrPortFrom(addr.Addr(), echoPort))
			}
			var wg sync.WaitGroup
			for _, c := range []struct {
				name string
				from *testutil.Netns
				to   netip.Prefix
			}{
				{"A to B over IPv4", h.a, innerB4},
				{"A to B over IPv6", h.a, innerB6},
				{"B to A over IPv4", h.b, innerA4},
				{"B to A over IPv6", h.b, innerA6},
			} {
				wg.Go(func() {
					if err := tcpEcho(c.from, netip.AddrPortFrom(c.to.Addr(), echoPort), 300<<10); err != nil {
						t.Errorf("TCP %s: %v", c.name, err)
					}
				})
			}
			wg.Wait()

			// UDP: many inner flows from A, a few from B, answered.
			const udpPort = 7001
			udpEchoServer(t, h.b, netip.AddrPortFrom(innerB6.Addr(), udpPort))
			udpEchoServer(t, h.b, netip.AddrPortFrom(innerB4.Addr(), udpPort))
			udpEchoServer(t, h.a, netip.AddrPortFrom(innerA4.Addr(), udpPort))
			if err := udpFlows(h.a, netip.AddrPortFrom(innerB6.Addr(), udpPort), 48); err != nil {
				t.Errorf("UDP A to B over IPv6: %v", err)
			}
			if err := udpFlows(h.a, netip.AddrPortFrom(innerB4.Addr(), udpPort), 16); err != nil {
				t.Errorf("UDP A to B over IPv4: %v", err)
			}
			if err := udpFlows(h.b, netip.AddrPortFrom(innerA4.Addr(), udpPort), 8); err != nil {
				t.Errorf("UDP B to A over IPv4: %v", err)
			}
			if t.Failed() {
				return
			}

			sa, sb := a.stats(), b.stats()
			for _, e := range []struct {
				name string
				s    Stats
				peer Stats
			}{{"A", sa, sb}, {"B", sb, sa}} {
				s := e.s
				t.Logf("%s: sent %d (GSO sends %d), received %d, delivered %d, addresses used %d",
					e.name, s.Sent, s.Conn.GSOSends, s.Received, s.Delivered, s.AddressesUsed)
				if s.Sent == 0 || s.Delivered == 0 {
					t.Errorf("%s sent %d and delivered %d datagrams", e.name, s.Sent, s.Delivered)
				}
				drops := s.DroppedMalformed + s.DroppedAuth + s.DroppedTooOld +
					s.DroppedBadInner + s.Conn.DroppedForeign + s.Conn.DroppedOutsideRange
				if drops != 0 {
					t.Errorf("%s dropped datagrams on a clean path: %+v", e.name, s)
				}
				// The peer's probe copies duplicate datagrams it also sent
				// on the canonical pair: the replay window drops the
				// second of each, and nothing else repeats on a clean path.
				if s.DroppedReplay > e.peer.Conn.SentProbes {
					t.Errorf("%s dropped %d replays, but the peer sent only %d probe copies", e.name, s.DroppedReplay, e.peer.Conn.SentProbes)
				}
			}

			// Which end spreads its sources: it must use many addresses
			// (72 UDP flows and 4 TCP flows over 1024 addresses). The
			// others send every datagram from their one address.
			spreads := map[string]bool{"A": cfgA.spread.ourPrefix(), "B": cfgB.spread.ourPrefix()}
			for name, s := range map[string]Stats{"A": sa, "B": sb} {
				if !spreads[name] {
					// Those waiting for their pair to open (SentWaiting)
					// went on the canonical pair, unspread too.
					unspread := s.Conn.SentUnspread + s.Conn.SentWaiting
					if unspread != s.Conn.Sent || s.AddressesUsed != 0 {
						t.Errorf("%s does not spread its sources but sent %d of %d datagrams spread, from %d addresses",
							name, s.Conn.Sent-unspread, s.Conn.Sent, s.AddressesUsed)
					}
					continue
				}
				if s.AddressesUsed < 16 && !tc.outer4 {
					t.Errorf("%s spreads its sources but used only %d addresses", name, s.AddressesUsed)
				}
				if tc.ports && s.PortsUsed < 16 {
					t.Errorf("%s spreads its sources over 64 ports but used only %d", name, s.PortsUsed)
				}
			}
			if spreads["A"] && spreads["B"] && !tc.outer4 {
				// Flow-symmetric: both directions of a flow use one bucket,
				// so the two ends' sets of busy buckets mostly coincide
				// (two random sets of 76 out of 1024 would share about 6).
				ba, bb := usedBuckets(sa), usedBuckets(sb)
				shared := 0
				for k := range ba {
					if bb[k] {
						shared++
					}
				}
				if shared < 16 {
					t.Errorf("A and B share %d of their %d and %d buckets: replies do not follow their requests' pairs", shared, len(ba), len(bb))
				}
			}
		})
	}
}

// withPorts gives each end of a and b that spreads its sources a port
// range too (on IPv4, in place of its prefix), and the other end the
// same range as its peer's.
func withPorts(a, b *config, outer4 bool) {
	ports := map[*config]conn.PortRange{a: {First: 40000, Bits: 6}, b: {First: 41000, Bits: 6}}
	for _, e := range []struct{ end, peer *config }{{a, b}, {b, a}} {
		if outer4 {
			e.end.ours.Prefix, e.end.theirs.Prefix = netip.Prefix{}, netip.Prefix{}
		}
		e.end.ours.Ports = ports[e.end]
		e.end.theirs.Ports = ports[e.peer]
	}
}
