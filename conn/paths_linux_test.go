package conn_test

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// withHomeFirewall puts a home router's stateful firewall on h's router
// in front of A (behind r0), with A's canonical address and port open
// (testutil.HomeFirewall), and conntrack's UDP timeouts set to udpTimeout
// (both the one-way and the two-way one), and returns a function that
// reads the firewall's drop counter.
func withHomeFirewall(t *testing.T, h *routedHosts, udpTimeout time.Duration) (dropped func() int) {
	t.Helper()
	testutil.HomeFirewall(t, h.r, "r0", linkA, testutil.HomeFirewallRules{})
	// One echo across resolves the four neighbours on the way, so the
	// first datagrams do not wait a second in a neighbour queue.
	h.a.Run(t, "ping", "-6", "-c", "1", "-W", "5", linkB.Addr().String())
	secs := strconv.Itoa(int(udpTimeout / time.Second))
	h.r.Run(t, "sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout="+secs, "net.netfilter.nf_conntrack_udp_timeout_stream="+secs)
	return func() int { return int(testutil.NftCounter(t, h.r, "dropped")) }
}

// vpnEnd stands for a VPN on a conn: every datagram it reads is
// authentic, carries its flow's hash, a sequence number and whether it
// is a request, and it tells the conn of each (Observe). It answers each
// request on the same flow, and records, per sequence number, whether
// the datagram arrived on its flow's spread pair. Probe copies repeat a
// sequence number: they count once, as a VPN's replay window sees to.
type vpnEnd struct {
	c            *conn.FlowSpreadConn
	ours, theirs *flowaddr.Mapper
	answer       bool

	mu     sync.Mutex
	got    map[uint32]bool // sequence number -> it came on its spread pair
	copies int
}

func newVPNEnd(t *testing.T, c *conn.FlowSpreadConn, ours, theirs netip.Prefix, answer bool) *vpnEnd {
	e := &vpnEnd{c: c, ours: mapper(t, ours, 0), theirs: mapper(t, theirs, 0), answer: answer, got: map[uint32]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go e.read(t, ctx, done)
	t.Cleanup(func() { cancel(); c.SetReadDeadline(time.Now()); <-done })
	return e
}

func (e *vpnEnd) read(t *testing.T, ctx context.Context, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 64)
	for ctx.Err() == nil {
		n, info, err := e.c.ReadMsg(buf)
		if err != nil {
			if ctx.Err() == nil && !isTimeout(err) {
				t.Errorf("read: %v", err)
			}
			return
		}
		if n == 1 {
			continue // a keepalive: no flow
		}
		if n != 13 {
			t.Errorf("read a %d-byte datagram, want 13", n)
			continue
		}
		f := conn.Flow{Hash: binary.BigEndian.Uint64(buf), Valid: true}
		seq, request := binary.BigEndian.Uint32(buf[8:]), buf[12] == 1
		e.c.Observe(&info, f)
		spread := info.OuterSrc.Addr() == addrOf(e.theirs, f.Hash) && info.OuterDst.Addr() == addrOf(e.ours, f.Hash)
		e.mu.Lock()
		_, dup := e.got[seq]
		if dup {
			e.copies++
		} else {
			e.got[seq] = spread
		}
		e.mu.Unlock()
		if request && e.answer && !dup {
			buf[12] = 0
			if _, err := e.c.WriteFlow(buf[:13], info.Peer, f); err != nil {
				t.Errorf("answer: %v", err)
			}
		}
	}
}

func isTimeout(err error) bool {
	te, ok := err.(interface{ Timeout() bool })
	return ok && te.Timeout()
}

// received returns how many distinct sequence numbers in [from, to)
// arrived, and how many of those on their flow's spread pair.
func (e *vpnEnd) received(from, to uint32) (n, spread int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for s := from; s < to; s++ {
		if sp, ok := e.got[s]; ok {
			n++
			if sp {
				spread++
			}
		}
	}
	return n, spread
}

// request sends one request on flow h with sequence number seq.
func request(t *testing.T, c *conn.FlowSpreadConn, to netip.AddrPort, h uint64, seq uint32) {
	t.Helper()
	var p [13]byte
	binary.BigEndian.PutUint64(p[:], h)
	binary.BigEndian.PutUint32(p[8:], seq)
	p[12] = 1
	if _, err := c.WriteFlow(p[:], to, conn.Flow{Hash: h, Valid: true}); err != nil {
		t.Fatal(err)
	}
}

// firewallFlows are eight flows in distinct buckets of both ranges.
var firewallFlows = []uint64{
	0x0123_4567_89ab_cdef, 0x1fed_cba9_8765_4321, 0x2aaa_5555_aaaa_5555, 0x3c3c_c3c3_3c3c_c3c3,
	0x4f0f_f0f0_0f0f_f0f0, 0x5123_3210_0123_3210, 0x6666_7777_8888_9999, 0x7abc_def0_1234_5678,
}

// sendRounds has from send a request on every flow of firewallFlows, once
// per round, 20 ms apart; sequence numbers start at base.
func sendRounds(t *testing.T, from *conn.FlowSpreadConn, to netip.AddrPort, base uint32, rounds int) uint32 {
	t.Helper()
	seq := base
	for range rounds {
		for _, h := range firewallFlows {
			request(t, from, to, h, seq)
			seq++
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the last answers
	return seq
}

// TestFirewallLearnedPaths runs two conns through a home router's
// stateful firewall in front of A, both learning their paths (no peer
// Open) with probes on, and checks issue 12's rules end to end: flows
// opened from B's side, which the firewall lets in only on A's canonical
// pair, all arrive, none lost, and within a few round trips every flow
// runs on its own spread pair in both directions; likewise for flows
// opened from A's side.
func TestFirewallLearnedPaths(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	h := newRoutedHosts(t, true)
	dropped := withHomeFirewall(t, h, 30*time.Second)
	cfgA := conn.Config{Range: conn.Range{Prefix: prefixA}, Port: portA, Probe: true, Peers: []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}}}}
	cfgB := conn.Config{Range: conn.Range{Prefix: prefixB}, Port: portB, Probe: true, Peers: []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}}}}
	a, b := listenIn(t, h.a, cfgA), listenIn(t, h.b, cfgB)
	endA := newVPNEnd(t, a, prefixA, prefixB, true)
	endB := newVPNEnd(t, b, prefixB, prefixA, true)

	for _, side := range []struct {
		name            string
		from            *conn.FlowSpreadConn
		to              netip.AddrPort
		opener, replier *vpnEnd
		base            uint32
	}{
		{"opened by B, from outside", b, linkA, endB, endA, 0},
		{"opened by A, from inside", a, linkB, endA, endB, 1 << 20},
	} {
		const rounds = 25
		end := sendRounds(t, side.from, side.to, side.base, rounds)
		n, _ := side.replier.received(side.base, end)
		if n != int(end-side.base) {
			t.Errorf("%s: %d of %d requests arrived: the firewall black-holed some", side.name, n, end-side.base)
		}
		answers, _ := side.opener.received(side.base, end)
		if answers != int(end-side.base) {
			t.Errorf("%s: %d of %d answers arrived", side.name, answers, end-side.base)
		}
		// The last 10 rounds: every flow on its spread pair, both ways.
		last := end - 10*uint32(len(firewallFlows))
		if _, spread := side.replier.received(last, end); spread != int(end-last) {
			t.Errorf("%s: %d of the last %d requests came on their spread pair", side.name, spread, end-last)
		}
		if _, spread := side.opener.received(last, end); spread != int(end-last) {
			t.Errorf("%s: %d of the last %d answers came on their spread pair", side.name, spread, end-last)
		}
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("A: sent %d, waiting %d, probes %d, paths opened %d; B: sent %d, waiting %d, probes %d, paths opened %d; firewall drops %d",
		sa.Sent, sa.SentWaiting, sa.SentProbes, sa.PathsOpened, sb.Sent, sb.SentWaiting, sb.SentProbes, sb.PathsOpened, dropped())
	if sa.PathsOpened < uint64(len(firewallFlows)) || sb.PathsOpened < uint64(len(firewallFlows)) {
		t.Errorf("paths opened: A %d, B %d; want at least %d each", sa.PathsOpened, sb.PathsOpened, len(firewallFlows))
	}
	if sb.SentProbes == 0 || dropped() == 0 {
		t.Errorf("B sent %d probes and the firewall dropped %d datagrams: B's first probes to A's spread pairs must have been dropped", sb.SentProbes, dropped())
	}
}

// TestFirewallOpenPeerBlackHoles is the failure issue 12 reports, kept as
// a check that the firewall above is real: with A declared Open at B,
// every flow B opens goes straight to its spread pair, and the firewall
// drops all of them.
func TestFirewallOpenPeerBlackHoles(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	h := newRoutedHosts(t, true)
	dropped := withHomeFirewall(t, h, 30*time.Second)
	a := listenIn(t, h.a, conn.Config{Range: conn.Range{Prefix: prefixA}, Port: portA, Peers: []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}, Open: true}}})
	b := listenIn(t, h.b, conn.Config{Range: conn.Range{Prefix: prefixB}, Port: portB, Peers: []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}, Open: true}}})
	endA := newVPNEnd(t, a, prefixA, prefixB, true)
	newVPNEnd(t, b, prefixB, prefixA, true)
	end := sendRounds(t, b, linkA, 0, 5)
	if n, _ := endA.received(0, end); n != 0 {
		t.Errorf("%d of %d requests to an Open peer behind the firewall arrived; want none", n, end)
	}
	if d := dropped(); d < int(end) {
		t.Errorf("the firewall dropped %d datagrams, want at least the %d requests", d, end)
	}
}

// TestFirewallIdleFlowResumes lets the flows go idle for longer than the
// firewall's UDP timeout (2 s here) while keepalives hold the canonical
// pair, then resumes them from each side: with the path timeout below the
// firewall's, no datagram is lost; with a path timeout above it, the
// conn sends on pairs the firewall has forgotten, and B's are dropped.
func TestFirewallIdleFlowResumes(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	for _, tc := range []struct {
		name        string
		pathTimeout time.Duration
		wantLoss    bool
	}{
		{"path timeout below the firewall's", time.Second, false},
		{"path timeout above the firewall's", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newRoutedHosts(t, true)
			withHomeFirewall(t, h, 2*time.Second)
			cfgA := conn.Config{Range: conn.Range{Prefix: prefixA}, Port: portA, Probe: true, PathTimeout: tc.pathTimeout, Peers: []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}}}}
			cfgB := conn.Config{Range: conn.Range{Prefix: prefixB}, Port: portB, Probe: true, PathTimeout: tc.pathTimeout, Peers: []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}}}}
			a, b := listenIn(t, h.a, cfgA), listenIn(t, h.b, cfgB)
			endA := newVPNEnd(t, a, prefixA, prefixB, true)
			newVPNEnd(t, b, prefixB, prefixA, true)
			next := sendRounds(t, a, linkB, 0, 10) // A opens the flows
			// Idle, with A's keepalive on the canonical pair every 500 ms.
			for range 8 {
				if _, err := a.WriteFlow([]byte{0}, linkB, conn.Flow{}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(500 * time.Millisecond)
			}
			// B resumes every flow, one request each.
			from := next
			for i, f := range firewallFlows {
				request(t, b, linkA, f, from+uint32(i))
			}
			time.Sleep(300 * time.Millisecond)
			n, _ := endA.received(from, from+uint32(len(firewallFlows)))
			lost := len(firewallFlows) - n
			if tc.wantLoss && lost == 0 {
				t.Errorf("no request lost with a path timeout above the firewall's: the firewall did not expire the pairs, so this test proves nothing")
			}
			if !tc.wantLoss && lost != 0 {
				t.Errorf("%d of %d requests lost after the idle time", lost, len(firewallFlows))
			}
		})
	}
}
