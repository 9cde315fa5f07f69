package conn

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
)

// pathsConn builds, without a socket, the parts of a FlowSpreadConn that
// the path rules use: our prefix 2001:db8:b::/64 and one peer,
// [2001:db8:a::1]:51820, spreading over 2001:db8:a::/64 (ourBits and
// peerBits bits), not Open.
func pathsConn(tb testing.TB, probe bool, ourBits, peerBits int) (*FlowSpreadConn, netip.AddrPort) {
	tb.Helper()
	peer := netip.MustParseAddrPort("[2001:db8:a::1]:51820")
	cfg, err := Config{
		Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64"), Bits: ourBits},

		Peers: []Peer{{Addr: peer, Range: Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Bits: peerBits}}},
		Probe: probe,
	}.validate()
	if err != nil {
		tb.Fatal(err)
	}
	c := &FlowSpreadConn{
		prefix:      cfg.Range.Prefix,
		epoch:       time.Now(),
		pathTimeout: uint32(cfg.PathTimeout >> tickShift),
		probe:       cfg.Probe,
	}
	if err = c.initPeers(&cfg); err != nil {
		tb.Fatal(err)
	}
	if c.local, err = flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: cfg.Range.Prefix, Bits: cfg.Range.Bits}); err != nil {
		tb.Fatal(err)
	}
	c.tickRecvClock()
	return c, peer
}

// spreadInfo returns what a read reports for a datagram of flow hash h
// that came from the peer's address of h to ours: its spread pair.
func spreadInfo(c *FlowSpreadConn, peer netip.AddrPort, h uint64) RecvInfo {
	t := c.peers.Load()
	pm := t.peers[0].mapper
	return RecvInfo{
		Peer:     peer,
		OuterSrc: netip.AddrPortFrom(netip.AddrFrom16(pm.Addr16(pm.Bucket(h))), peer.Port()),
		OuterDst: netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(c.local.Bucket(h))), 51820),
		from:     peerRef{t, 0},
	}
}

// sendPath returns how a datagram of flow hash h to peer goes out, with
// its header.
func sendPath(t *testing.T, c *FlowSpreadConn, peer netip.AddrPort, h uint64) (uint8, outerHdr) {
	t.Helper()
	var o outerHdr
	var memo peerMemo
	_, path, err := c.outerFor(peer, Flow{Hash: h, Valid: true}, &o, &memo)
	if err != nil {
		t.Fatal(err)
	}
	if path == pathWaiting {
		c.waitOn(&o, peer)
	}
	return path, o
}

// advance moves the conn's path clock d ahead, as if d had passed.
func advance(c *FlowSpreadConn, d time.Duration) {
	c.epoch = c.epoch.Add(-d)
	c.tickRecvClock()
}

// TestPathRules walks one flow through the sending rules: it waits on the
// canonical pair until the peer's traffic for it arrives on its spread
// pair, goes there while that traffic keeps coming, and goes back once
// it has been silent for the path timeout.
func TestPathRules(t *testing.T) {
	c, peer := pathsConn(t, false, 10, 10)
	const h = 0x1234_5678_9abc_def0
	canonical := peer.Addr().As16()

	if path, o := sendPath(t, c, peer, h); path != pathWaiting || o.dst != canonical || o.kind != outerDefault {
		t.Fatalf("before any arrival: path %d to %v (kind %d), want it waiting on %v", path, netip.AddrFrom16(o.dst), o.kind, peer)
	}
	// Arrivals that do not prove the flow's pair open change nothing.
	other := spreadInfo(c, peer, h^1<<63) // another bucket's pair
	canon := RecvInfo{Peer: peer, OuterSrc: peer, OuterDst: spreadInfo(c, peer, h).OuterDst}
	crossed := spreadInfo(c, peer, h)
	crossed.OuterDst = other.OuterDst // from f's address to another of ours
	for _, info := range []RecvInfo{other, canon, crossed} {
		c.Observe(&info, Flow{Hash: h, Valid: true})
	}
	c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h}) // unclassified
	if path, _ := sendPath(t, c, peer, h); path != pathWaiting {
		t.Fatalf("after arrivals on other pairs: path %d, want waiting", path)
	}
	if got := c.stats.pathsOpened.Load(); got != 0 {
		t.Fatalf("PathsOpened %d after arrivals on other pairs, want 0", got)
	}

	c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h, Valid: true})
	path, o := sendPath(t, c, peer, h)
	pm := c.peers.Load().peers[0].mapper
	if path != pathSpread || o.dst != pm.Addr16(pm.Bucket(h)) || o.src != c.local.Addr16(c.local.Bucket(h)) {
		t.Fatalf("after an arrival on its pair: path %d, %v -> %v; want it spread", path, netip.AddrFrom16(o.src), netip.AddrFrom16(o.dst))
	}
	if got := c.stats.pathsOpened.Load(); got != 1 {
		t.Fatalf("PathsOpened %d, want 1", got)
	}

	// Arrivals keep it open past the timeout; silence closes it.
	for range 3 {
		advance(c, DefaultPathTimeout/2)
		c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h, Valid: true})
	}
	if path, _ := sendPath(t, c, peer, h); path != pathSpread {
		t.Fatalf("with arrivals every %v: path %d, want spread", DefaultPathTimeout/2, path)
	}
	if got := c.stats.pathsOpened.Load(); got != 1 {
		t.Fatalf("PathsOpened %d after refreshes, want still 1", got)
	}
	advance(c, DefaultPathTimeout-time.Second)
	if path, _ := sendPath(t, c, peer, h); path != pathSpread {
		t.Fatalf("%v after the last arrival: path %d, want spread", DefaultPathTimeout-time.Second, path)
	}
	advance(c, 2*time.Second)
	if path, _ := sendPath(t, c, peer, h); path != pathWaiting {
		t.Fatalf("%v after the last arrival: path %d, want waiting", DefaultPathTimeout+time.Second, path)
	}
}

func ptr[T any](v T) *T { return &v }

// TestPathProbes checks the probe rule: a flow whose pair is not known
// open sends one probe copy at once, then at most one per probeTicks, and
// none once the pair is open.
func TestPathProbes(t *testing.T) {
	c, peer := pathsConn(t, true, 10, 10)
	const h = 0x0fed_cba9_8765_4321
	path, o := sendPath(t, c, peer, h)
	pm := c.peers.Load().peers[0].mapper
	if path != pathProbe || o.dst != pm.Addr16(pm.Bucket(h)) || o.src != c.local.Addr16(c.local.Bucket(h)) {
		t.Fatalf("first datagram: path %d to %v, want a probe on its spread pair", path, netip.AddrFrom16(o.dst))
	}
	for range 5 {
		if path, _ := sendPath(t, c, peer, h); path != pathWaiting {
			t.Fatalf("within a second of a probe: path %d, want waiting", path)
		}
	}
	advance(c, probeTicks<<tickShift)
	if path, _ := sendPath(t, c, peer, h); path != pathProbe {
		t.Fatalf("%v after the probe: path %d, want a probe", time.Duration(probeTicks<<tickShift), path)
	}
	c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h, Valid: true})
	advance(c, 2*probeTicks<<tickShift)
	if path, _ := sendPath(t, c, peer, h); path != pathSpread {
		t.Fatalf("after an arrival: path %d, want spread, no probe", path)
	}
}

// TestPathTags checks that with more pairs than slots, a slot vouches only
// for the pair whose arrival it recorded: a flow of another pair sharing
// it waits.
func TestPathTags(t *testing.T) {
	c, peer := pathsConn(t, false, 14, 16) // 2^16 pairs, 2^12 slots
	ps := c.peers.Load().peers[0].paths
	if got, want := ps.pathSlotBytes(), 8<<maxPathBits; got != want {
		t.Fatalf("slot memory %d bytes, want %d", got, want)
	}
	const h uint64 = 0xabcd_0000_0000_0000
	sibling := h ^ 1<<(64-16) // same slot (top 12 bits), another pair
	c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h, Valid: true})
	if path, _ := sendPath(t, c, peer, h); path != pathSpread {
		t.Fatalf("opened flow: path %d, want spread", path)
	}
	if path, _ := sendPath(t, c, peer, sibling); path != pathWaiting {
		t.Fatalf("a flow of another pair in the same slot: path %d, want waiting", path)
	}
}

// TestObserveForgedSources sends, as an attacker who can spoof any of the
// peer's addresses would, authentic-looking arrivals of flows on pairs
// that are not theirs (every other bucket's source, and ours mixed up),
// and checks that not one slot of the path table changes.
func TestObserveForgedSources(t *testing.T) {
	c, peer := pathsConn(t, true, 6, 6)
	rng := rand.New(rand.NewPCG(3, 4))
	pm := c.peers.Load().peers[0].mapper
	// Some flows are open; the table is then snapshotted.
	for range 16 {
		h := rng.Uint64()
		c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h, Valid: true})
	}
	before := pathSlots(c)
	for range 2000 {
		h := rng.Uint64()
		info := spreadInfo(c, peer, h)
		switch rng.IntN(3) {
		case 0: // from another bucket's address of the peer
			if b := rng.Uint32N(uint32(pm.Len())); b != pm.Bucket(h) {
				info.OuterSrc = netip.AddrPortFrom(netip.AddrFrom16(pm.Addr16(b)), peer.Port())
			} else {
				continue
			}
		case 1: // to another of our addresses
			if b := rng.Uint32N(uint32(c.local.Len())); b != c.local.Bucket(h) {
				info.OuterDst = netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(b)), 51820)
			} else {
				continue
			}
		case 2: // from the right address with another port
			info.OuterSrc = netip.AddrPortFrom(info.OuterSrc.Addr(), peer.Port()+1)
		}
		c.Observe(&info, Flow{Hash: h, Valid: true})
	}
	if after := pathSlots(c); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("forged arrivals changed the path table:\nbefore %x\nafter  %x", before, after)
	}
}

// pathSlots returns a copy of the peer's path slots.
func pathSlots(c *FlowSpreadConn) []uint64 {
	s := c.peers.Load().peers[0].paths.slots.Load()
	if s == nil {
		return nil
	}
	out := make([]uint64, len(*s))
	for i := range *s {
		out[i] = (*s)[i].Load()
	}
	return out
}

// TestOpenPeerSpreadsAtOnce checks Peer.Open: every flow to the peer goes
// on its spread pair from the first datagram, and reads keep no clock.
func TestOpenPeerSpreadsAtOnce(t *testing.T) {
	peer := netip.MustParseAddrPort("[2001:db8:a::1]:51820")
	cfg, err := Config{
		Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")},
		Peers: []Peer{{Addr: peer, Range: Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64")}, Open: true}},
		Probe: true,
	}.validate()
	if err != nil {
		t.Fatal(err)
	}
	c := &FlowSpreadConn{prefix: cfg.Range.Prefix, probe: true, epoch: time.Now()}
	if err = c.initPeers(&cfg); err != nil {
		t.Fatal(err)
	}
	if c.local, err = flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: cfg.Range.Prefix}); err != nil {
		t.Fatal(err)
	}
	if c.peers.Load().learning {
		t.Fatal("a table with only Open peers keeps the receive clock")
	}
	for h := range uint64(64) {
		if path, _ := sendPath(t, c, peer, h<<58|h); path != pathSpread {
			t.Fatalf("flow %d to an Open peer: path %d, want spread", h, path)
		}
	}
}

// BenchmarkObserve measures Observe as a VPN calls it for every
// authentic datagram it reads, over 1024 flows of a spreading peer: with
// the RecvInfo a read returned (read), and with one the caller made
// (made), which costs a lookup of the peer by its address.
func BenchmarkObserve(b *testing.B) {
	for _, made := range []bool{false, true} {
		name := "read"
		if made {
			name = "made"
		}
		b.Run(name, func(b *testing.B) {
			c, peer := pathsConn(b, true, 10, 10)
			rng := rand.New(rand.NewPCG(5, 6))
			type arrival struct {
				info RecvInfo
				f    Flow
			}
			arrivals := make([]arrival, 1024)
			for i := range arrivals {
				h := rng.Uint64()
				arrivals[i] = arrival{spreadInfo(c, peer, h), Flow{Hash: h, Valid: true}}
				if made {
					arrivals[i].info.from = peerRef{}
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a := &arrivals[i%len(arrivals)]
				c.Observe(&a.info, a.f)
				i++
			}
		})
	}
}

// BenchmarkPathStateMemory reports the memory of the path state of
// 10,000 spreading peers, each with /64 ranges of 2^10 addresses at both
// ends, once every peer has learned a path (its slots allocated): the
// bytes per peer, and in all.
func BenchmarkPathStateMemory(b *testing.B) {
	const peers = 10_000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		states := make([]*pathState, peers)
		for i := range states {
			states[i] = newPathState(rangeBitsPair{addrs: 10}, rangeBitsPair{addrs: 10}, false)
			states[i].slotOf(uint64(i), true)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(states)
		total := float64(after.HeapAlloc - before.HeapAlloc)
		b.ReportMetric(total/peers, "B/peer")
		b.ReportMetric(total/(1<<20), "MiB/10k-peers")
	}
}
