package wireguard

import (
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// A client behind a real Linux masquerade, on IPv4, between two
// wireguard-go devices on kernel TUNs:
//
//	C (c0) 10.9.0.2 ── (r0) R (r1) 192.0.2.1 ── 192.0.2.2 (s0) S
//	ports 40000-40015, canonical 5000        one address, port 6000
//	inner 10.0.0.1                           inner 10.0.0.2
//
// R masquerades C (nftables, as conn's port tests do): C's canonical
// port keeps its number, as masquerade keeps a free port, and each of
// C's spread ports gets a random one of 20000-29999, as from a NAT whose
// ports are taken. S knows C as 192.0.2.1:5000 with nat-ports: it learns
// each flow's translated port from C's authenticated traffic.
var (
	natClient      = testutil.IPv4Client
	natPublic      = netip.AddrPortFrom(testutil.IPv4Public, 5000) // where R maps C's canonical socket
	natServer      = netip.AddrPortFrom(testutil.IPv4Server, 6000)
	natClientPorts = conn.PortRange{First: 40000, Bits: 4}
)

// newNATTunnel builds the topology above and brings both devices up: C
// with S as its endpoint and a keepalive, as a client behind a NAT is
// configured; S with no endpoint for C, which it learns from C's
// handshake. Without natPorts S does not list C as a conn peer: C is a
// stranger, heard through AcceptUnknown.
func newNATTunnel(t *testing.T, natPorts bool) (c, s *fwEnd, nsR *testutil.Netns) {
	t.Helper()
	last := uint16(int(natClientPorts.First) + natClientPorts.Len() - 1)
	nsC, nsR, nsS := testutil.NewIPv4Path(t, "c0", "s0", true, natClientPorts.First, last)

	var key hash.Key
	rand.Read(key[:])
	kC, kS := newKey(t), newKey(t)
	c = newFwEnd(t, nsC, conn.Config{Range: conn.Range{Ports: natClientPorts}, Port: natPublic.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: natServer}}})
	var peers []conn.Peer
	if natPorts {
		peers = []conn.Peer{{Addr: natPublic, Range: conn.Range{Ports: conn.PortRange{Bits: natClientPorts.Bits, Translated: true}}}}
	}
	s = newFwEnd(t, nsS, conn.Config{Port: natServer.Port(), Key: key, Symmetric: true, Peers: peers})
	c.configure(t, kC, kS, natPublic.Port(), natServer, innerB, innerA, "persistent_keepalive_interval=25\n")
	s.configure(t, kS, kC, natServer.Port(), netip.AddrPort{}, innerA, innerB, "")
	return c, s, nsR
}

// TestNATPortSpread runs ping, TCP and 64 UDP flows through the tunnel
// in both directions, the client behind the masquerade, the server's
// first: flows opened at each end must complete, the server's first
// ones on the canonical pair until the client's answers teach it the
// translated ports; on the server's wire each direction's data
// must use many outer port pairs (one per port of the client's range
// that the flows hash to, each translated by the NAT), the server's
// answers only on pairs the client sent on; and the server must report
// the client at its one canonical endpoint throughout, whichever
// translated port its datagrams came from.
func TestNATPortSpread(t *testing.T) {
	c, s, _ := newNATTunnel(t, true)
	capture := startPairCapture(t, s.ns, "s0")
	natTraffic(t, c, s, natPublic.String())
	toS, fromS := capture.stop(t, func(ap netip.AddrPort) bool { return ap == natServer }, natServer, natPublic)
	cs, ss := c.bind.Conn().Stats(), s.bind.Conn().Stats()
	t.Logf("on the server's wire: data on %d spread port pairs to the server, %d from it", len(toS), len(fromS))
	t.Logf("client: sent %d, per port %v, unspread %d; bind %+v", cs.Sent, cs.SentPerPort, cs.SentUnspread, c.bind.Stats())
	t.Logf("server: paths opened %d, sent waiting %d; bind %+v", ss.PathsOpened, ss.SentWaiting, s.bind.Stats())

	// 64 UDP flows each way over 16 ports miss a port with odds of 1 in
	// 4 (16 * (15/16)^64); missing 5 is next to impossible.
	want := natClientPorts.Len() - 4
	if len(toS) < want || len(fromS) < want {
		t.Errorf("data on %d outer port pairs to the server and %d from it, want at least %d each: the flows were not spread", len(toS), len(fromS), want)
	}
	for p := range toS {
		if p.src.Addr() != natPublic.Addr() || p.src.Port() != natPublic.Port() && natClientPorts.Contains(p.src.Port()) {
			t.Errorf("data from %v reached the server: not through the masquerade, or with an untranslated port", p.src)
		}
	}
	for p := range fromS {
		if toS[natPair{p.dst, p.src}] == 0 {
			t.Errorf("the server sent data to %v, a port the client never sent data from", p.dst)
		}
	}
	if ss.SentWaiting == 0 {
		t.Errorf("the server sent nothing on the canonical pair, yet it opened flows before it knew any of the client's translated ports")
	}
	if ss.PathsOpened < uint64(want) || s.bind.Stats().Observed == 0 {
		t.Errorf("the server learned %d paths and observed %d packets, want at least %d paths", ss.PathsOpened, s.bind.Stats().Observed, want)
	}
	if st := c.bind.Stats(); st.SentUnmatched != 0 || st.RecvUnmatched != 0 {
		t.Errorf("client bind: %d sent and %d received unmatched, want none", st.SentUnmatched, st.RecvUnmatched)
	}
}

// natTraffic opens flows at the server, then at the client: ping, TCP
// and 64 UDP flows, which must all complete. After each side it checks
// that the server reports the client at endpoint, if that is not empty.
func natTraffic(t *testing.T, c, s *fwEnd, endpoint string) {
	t.Helper()
	// The client's keepalive, sent at device up, makes the handshake
	// that tells the server where the client is.
	for deadline := time.Now().Add(10 * time.Second); s.endpoint(t) == "" && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	// The server opens flows first, while it knows no translated port:
	// they start on the canonical pair and move when the client answers.
	sides := []struct {
		name     string
		from, to *fwEnd
		dst      netip.Addr
	}{{"server to client", s, c, innerA}, {"client to server", c, s, innerB}}
	for _, d := range sides {
		if out, err := d.from.ns.Output("ping", "-c", "3", "-i", "0.2", "-W", "5", d.dst.String()); err != nil {
			t.Fatalf("ping %s: %v: %s", d.name, err, out)
		}
		addr := netip.AddrPortFrom(d.dst, 7000)
		fwEchoServer(t, d.to.ns, addr)
		if err := fwEcho(d.from.ns, addr, 256<<10); err != nil {
			t.Errorf("TCP %s: %v", d.name, err)
		}
		echo := netip.AddrPortFrom(d.dst, 9000)
		testutil.UDPEchoServer(t, d.to.ns, echo)
		if err := testutil.UDPFlows(d.from.ns, echo, 64, 2); err != nil {
			t.Errorf("UDP %s: %v", d.name, err)
		}
		if got := s.endpoint(t); endpoint != "" && got != endpoint {
			t.Errorf("after %s: the server reports the client at %q, want its canonical endpoint %v", d.name, got, endpoint)
		}
	}
}

// TestNATUnconfiguredPeer is the doc's case of a server that does not
// list the client behind the NAT as a conn peer: AcceptUnknown still
// hands every datagram to wireguard-go, which authenticates it and roams
// the client's endpoint to its latest source, one of its translated
// ports. Flows opened at each end complete, but the server learns no
// paths, and its endpoint for the client is no longer the canonical one.
func TestNATUnconfiguredPeer(t *testing.T) {
	c, s, _ := newNATTunnel(t, false)
	natTraffic(t, c, s, "")
	ss := s.bind.Conn().Stats()
	got := s.endpoint(t)
	t.Logf("server: endpoint %s, %d datagrams from strangers, %d paths opened", got, ss.ReceivedUnknown, ss.PathsOpened)
	if ap, err := netip.ParseAddrPort(got); err != nil || ap.Addr() != natPublic.Addr() || ap == natPublic {
		t.Errorf("the server reports the client at %q, want one of its translated ports at %v (not the canonical %v)", got, natPublic.Addr(), natPublic)
	}
	if ss.PathsOpened != 0 || ss.ReceivedUnknown == 0 {
		t.Errorf("server: %d paths opened, %d datagrams from strangers; want 0 and many", ss.PathsOpened, ss.ReceivedUnknown)
	}
}

// endpoint returns the peer endpoint that the device reports over UAPI.
func (e *fwEnd) endpoint(t *testing.T) string { return deviceEndpoint(t, e.dev) }

// natPair is the outer address and port pair of a datagram.
type natPair struct{ src, dst netip.AddrPort }

// pairCapture reads the IPv4 and IPv6 packets on an interface with
// AF_PACKET, both ways, and counts the WireGuard transport data on each
// outer pair: a view of the wire (after the NAT, if any), independent of
// the adapter's counters.
type pairCapture struct {
	fd      int
	done    chan struct{}
	stopped atomic.Bool
	mu      sync.Mutex
	pairs   map[natPair]int
}

func startPairCapture(t *testing.T, ns *testutil.Netns, iface string) *pairCapture {
	t.Helper()
	c := &pairCapture{done: make(chan struct{}), pairs: map[natPair]int{}}
	// ETH_P_ALL: the kernel hands outgoing packets to such sockets alone.
	fd, err := openPacketSocket(ns, iface, unix.SOCK_DGRAM, unix.ETH_P_ALL, false)
	if err != nil {
		t.Fatalf("capture on %s: %v", iface, err)
	}
	c.fd = fd
	go c.run()
	t.Cleanup(func() { c.stopped.Store(true); <-c.done; unix.Close(c.fd) })
	return c
}

func (c *pairCapture) run() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for !c.stopped.Load() {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // the timeout, or an interrupted call
		}
		c.packet(buf[:n])
	}
}

// packet records an IP packet that carries UDP whose payload starts as WireGuard transport data with content (a GSO
// run of them crosses the veth as one packet). IPv4 (RFC 791): header
// length in the low nibble of byte 0, protocol at 9, addresses at 12 and
// 16. IPv6 (RFC 8200): next header at 6, addresses at 8 and 24; the conn
// sends no extension headers.
func (c *pairCapture) packet(p []byte) {
	var src, dst netip.Addr
	var u []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_UDP:
		src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		u = p[int(p[0]&0xf)*4:]
	case len(p) >= 40 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_UDP:
		src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		u = p[40:]
	default:
		return
	}
	if len(u) < 8+transportOverhead+1 || binary.LittleEndian.Uint32(u[8:]) != messageTransportType {
		return
	}
	pair := natPair{netip.AddrPortFrom(src, binary.BigEndian.Uint16(u)), netip.AddrPortFrom(dst, binary.BigEndian.Uint16(u[2:]))}
	c.mu.Lock()
	c.pairs[pair]++
	c.mu.Unlock()
}

// stop ends the capture and returns the outer pairs of the data to the
// end that ours says is ours, and from it, but for the canonical pair
// between canon and peer, in either direction.
func (c *pairCapture) stop(t *testing.T, ours func(netip.AddrPort) bool, canon, peer netip.AddrPort) (to, from map[natPair]int) {
	t.Helper()
	c.stopped.Store(true)
	<-c.done
	if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err != nil || st.Drops != 0 {
		t.Logf("capture statistics %+v, %v: some frames were dropped", st, err)
	}
	to, from = map[natPair]int{}, map[natPair]int{}
	for p, n := range c.pairs {
		switch {
		case p == natPair{peer, canon} || p == natPair{canon, peer}:
		case ours(p.dst):
			to[p] = n
		case ours(p.src):
			from[p] = n
		}
	}
	return to, from
}
