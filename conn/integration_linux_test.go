package conn_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// routedHosts is two hosts, A and B, each with a spread prefix routed to
// it through a router namespace R:
//
//	A (a0) 2001:db8:ff:1::2 ── r0 R r1 ── 2001:db8:ff:2::2 (b0) B
//	prefix 2001:db8:a::/64                 prefix 2001:db8:b::/64
//
// Each end's canonical address is its link address, where its unspread
// datagrams come from: the spread prefixes are separate, as a site's
// delegated prefix is separate from its router's uplink address.
type routedHosts struct {
	a, r, b *testutil.Netns
}

func newRoutedHosts(t *testing.T, anyIP bool) *routedHosts {
	t.Helper()
	h := &routedHosts{a: testutil.NewNetns(t), r: testutil.NewNetns(t), b: testutil.NewNetns(t)}
	testutil.Veth(t, h.a, "a0", h.r, "r0")
	testutil.Veth(t, h.r, "r1", h.b, "b0")
	h.r.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	h.a.Run(t, "ip", "addr", "add", "2001:db8:ff:1::2/64", "dev", "a0", "nodad")
	h.r.Run(t, "ip", "addr", "add", "2001:db8:ff:1::1/64", "dev", "r0", "nodad")
	h.r.Run(t, "ip", "addr", "add", "2001:db8:ff:2::1/64", "dev", "r1", "nodad")
	h.b.Run(t, "ip", "addr", "add", "2001:db8:ff:2::2/64", "dev", "b0", "nodad")
	h.a.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:ff:1::1")
	h.b.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:ff:2::1")
	h.r.Run(t, "ip", "-6", "route", "add", prefixA.String(), "via", "2001:db8:ff:1::2")
	h.r.Run(t, "ip", "-6", "route", "add", prefixB.String(), "via", "2001:db8:ff:2::2")
	if anyIP {
		h.a.Run(t, "ip", "-6", "route", "add", "local", prefixA.String(), "dev", "lo")
		h.b.Run(t, "ip", "-6", "route", "add", "local", prefixB.String(), "dev", "lo")
	}
	return h
}

var (
	linkA = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:ff:1::2"), portA)
	linkB = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:ff:2::2"), portB)
)

// backend describes a receive backend for the table of integration tests.
type backend struct {
	name  string
	anyIP bool                      // the hosts get AnyIP local routes
	recv  func(string) conn.Receive // from the host's interface name
}

var backends = []backend{
	{"anyip", true, func(string) conn.Receive { return conn.AnyIP{} }},
	{"raw", false, func(ifname string) conn.Receive { return conn.Raw{Interface: ifname} }},
}

// ends opens A's and B's conns, each the other's peer.
func (h *routedHosts) ends(t *testing.T, be backend, cfgA, cfgB conn.Config) (a, b *conn.FlowSpreadConn) {
	t.Helper()
	cfgA.Range.Prefix, cfgA.Port, cfgA.Receive = prefixA, portA, be.recv("a0")
	cfgA.Peers = []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}, Open: true}}
	cfgB.Range.Prefix, cfgB.Port, cfgB.Receive = prefixB, portB, be.recv("b0")
	cfgB.Peers = []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}, Open: true}}
	return listenIn(t, h.a, cfgA), listenIn(t, h.b, cfgB)
}

// pairCapture records the outer address pairs of UDP datagrams between
// the two prefixes as the router's r1 link sees them, from an AF_PACKET
// socket of its own: independent of the code under test. (gopacket's
// pcapgo handle cannot enlarge its receive buffer, and on a busy machine
// it lost datagrams.)
type pairCapture struct {
	mu     sync.Mutex
	pairs  map[[2]netip.Addr]int // [src, dst] -> datagrams
	fd     int
	done   chan struct{}
	once   sync.Once
	drops  uint64 // datagrams the capture socket lost, once done
	stopFn func()
}

// capturePairs starts the capture on r's r1; it stops when the test ends.
func capturePairs(t *testing.T, r *testutil.Netns) *pairCapture {
	t.Helper()
	c := &pairCapture{pairs: map[[2]netip.Addr]int{}, done: make(chan struct{})}
	err := r.Do(func() error {
		ifi, err := net.InterfaceByName("r1")
		if err != nil {
			return err
		}
		// SOCK_DGRAM: frames arrive without their Ethernet header.
		// ETH_P_ALL, in network byte order: only that sees the frames the
		// router sends, not just those it receives.
		proto := int(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, unix.ETH_P_ALL)))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		c.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
			return err
		}
		// A read timeout lets the reader notice stop without a wake-up.
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	})
	if err != nil {
		if c.fd != 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture on r1: %v", err)
	}
	stopping := make(chan struct{})
	go func() {
		defer close(c.done)
		buf := make([]byte, 128) // headers suffice; longer packets are truncated
		for {
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) {
				// Queue drained: stop if asked to.
				select {
				case <-stopping:
					return
				default:
				}
			}
			if err != nil || n < 40 || buf[0]>>4 != 6 || buf[6] != 17 {
				continue // timeouts and what is not IPv6 UDP (ARP, ND, ...)
			}
			src := netip.AddrFrom16([16]byte(buf[8:24]))
			dst := netip.AddrFrom16([16]byte(buf[24:40]))
			c.mu.Lock()
			c.pairs[[2]netip.Addr{src, dst}]++
			c.mu.Unlock()
		}
	}()
	c.stopFn = func() { close(stopping) }
	t.Cleanup(c.stop)
	return c
}

// stop ends the capture and records how many datagrams it lost.
func (c *pairCapture) stop() {
	c.once.Do(func() {
		c.stopFn()
		<-c.done
		if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			c.drops = uint64(st.Drops)
		}
		unix.Close(c.fd)
	})
}

func (c *pairCapture) between(src, dst netip.Prefix) map[[2]netip.Addr]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[[2]netip.Addr]int{}
	for p, n := range c.pairs {
		if src.Contains(p[0]) && dst.Contains(p[1]) {
			m[p] = n
		}
	}
	return m
}

func TestIntegrationSpread(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			leakCheck := goleak.IgnoreCurrent()
			h := newRoutedHosts(t, be.anyIP)
			key, err := hash.NewKey()
			if err != nil {
				t.Fatal(err)
			}
			cfg := conn.Config{Key: key, Symmetric: true}
			a, b := h.ends(t, be, cfg, cfg)
			capture := capturePairs(t, h.r)

			const flows = 256
			buf := make([]byte, 2048)
			requestPair := make(map[int][2]netip.AddrPort)
			// Requests and replies in chunks, so that the capture keeps up.
			const chunk = 16
			a.SetReadDeadline(time.Now().Add(20 * time.Second))
			b.SetReadDeadline(time.Now().Add(20 * time.Second))
			for first := 0; first < flows; first += chunk {
				for i := first; i < first+chunk; i++ {
					inner := udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", uint16(20000+i), 443)
					dgram := binary.BigEndian.AppendUint32(nil, uint32(i))
					if _, err := a.WriteFlow(append(dgram, inner...), linkB, a.Classify(inner)); err != nil {
						t.Fatal(err)
					}
				}
				for range chunk {
					n, info, err := b.ReadMsg(buf)
					if err != nil {
						t.Fatalf("B read: %v", err)
					}
					if info.Peer != linkA {
						t.Fatalf("B read Peer %v, want A's canonical %v", info.Peer, linkA)
					}
					i := int(binary.BigEndian.Uint32(buf[:n]))
					requestPair[i] = [2]netip.AddrPort{info.OuterSrc, info.OuterDst}
				}
				// Replies, classified from B's side of each inner flow.
				for i := first; i < first+chunk; i++ {
					inner := udp6Packet(t, "2001:db8:2::2", "2001:db8:1::1", 443, uint16(20000+i))
					dgram := binary.BigEndian.AppendUint32(nil, uint32(i))
					if _, err := b.WriteFlow(append(dgram, inner...), linkA, b.Classify(inner)); err != nil {
						t.Fatal(err)
					}
				}
				for range chunk {
					n, info, err := a.ReadMsg(buf)
					if err != nil {
						t.Fatalf("A read: %v", err)
					}
					if info.Peer != linkB {
						t.Fatalf("A read Peer %v, want B's canonical %v", info.Peer, linkB)
					}
					i := int(binary.BigEndian.Uint32(buf[:n]))
					req, ok := requestPair[i]
					if !ok {
						t.Fatalf("A read a reply for flow %d before B read its request", i)
					}
					if info.OuterSrc.Addr() != req[1].Addr() || info.OuterDst.Addr() != req[0].Addr() {
						t.Errorf("flow %d: request %v -> %v, reply %v -> %v; want the same pair reversed",
							i, req[0], req[1], info.OuterSrc, info.OuterDst)
					}
				}
			}
			if len(requestPair) != flows {
				t.Fatalf("B got %d distinct flows, want %d", len(requestPair), flows)
			}

			// A stranger on the router's link sends to A's range: dropped
			// and counted, while B's next datagram gets through.
			stranger := freebindSocket(t, h.r, netip.MustParseAddrPort("[2001:db8:ff:1::1]:"+strconv.Itoa(portB)))
			inRangeA := netip.AddrPortFrom(addrOf(mapper(t, prefixA, 0), 1<<63), portA)
			if _, err := stranger.WriteToUDPAddrPort([]byte("foreign"), inRangeA); err != nil {
				t.Fatal(err)
			}
			stranger.Close()
			// Spread as flow 0's reply, so that it takes the foreign
			// datagram's path (the Raw backend reads our own addresses
			// from a second source, in no set order with the first).
			reply0 := b.Classify(udp6Packet(t, "2001:db8:2::2", "2001:db8:1::1", 443, 20000))
			if _, err := b.WriteFlow([]byte("after"), linkA, reply0); err != nil {
				t.Fatal(err)
			}
			n, info, err := a.ReadMsg(buf)
			if err != nil || string(buf[:n]) != "after" || info.Peer != linkB {
				t.Fatalf("A read %q from %v, %v; want B's %q", buf[:n], info.Peer, err, "after")
			}
			if st := a.Stats(); st.DroppedForeign != 1 || st.Received != flows+1 {
				t.Errorf("A Stats: DroppedForeign %d, Received %d; want 1, %d", st.DroppedForeign, st.Received, flows+1)
			}

			capture.stop()
			ab, ba := capture.between(prefixA, prefixB), capture.between(prefixB, prefixA)
			requested := map[[2]netip.Addr]bool{}
			for _, p := range requestPair {
				requested[[2]netip.Addr{p[0].Addr(), p[1].Addr()}] = true
			}
			if len(ab) < 200 {
				t.Errorf("the router saw %d distinct outer pairs from A to B for %d flows, want >= 200 (B read %d; the capture lost %d datagrams)",
					len(ab), flows, len(requested), capture.drops)
			}
			// Each reply pair on the wire is a request pair reversed (the
			// capture may miss a datagram, so compare with what B read).
			for p := range ba {
				if !requested[[2]netip.Addr{p[1], p[0]}] {
					t.Errorf("the router saw a reply on %v -> %v, a pair no request used", p[0], p[1])
				}
			}
			t.Logf("%s: the router saw %d request pairs (B read %d), %d reply pairs for %d flows", be.name, len(ab), len(requested), len(ba), flows)
			a.Close()
			b.Close()
			goleak.VerifyNone(t, leakCheck)
		})
	}
}

// TestIntegrationRotation drives traffic across key rotations of a
// periodic policy: every datagram arrives, in order within its flow, and
// flows do move to new address pairs.
func TestIntegrationRotation(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			leakCheck := goleak.IgnoreCurrent()
			h := newRoutedHosts(t, be.anyIP)
			newPolicy := func() hash.Policy {
				p, err := hash.NewPeriodic(hash.PeriodicConfig{
					Secret: []byte("a secret both ends share, 32 byte"), Period: hash.MinPeriod, IdleGap: 50 * time.Millisecond,
				})
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			cfgA := conn.Config{Symmetric: true, Policy: newPolicy()}
			cfgB := conn.Config{Symmetric: true, Policy: newPolicy()}
			a, b := h.ends(t, be, cfgA, cfgB)

			const flows, perRound = 16, 4
			inner := make([][]byte, flows)
			for f := range inner {
				inner[f] = udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", uint16(30000+f), 443)
			}
			next := make([]uint32, flows)   // next sequence number to send, per flow
			expect := make([]uint32, flows) // next sequence number B must read, per flow
			seen := make([]map[[2]netip.Addr]bool, flows)
			for f := range seen {
				seen[f] = map[[2]netip.Addr]bool{}
			}
			msgs := make([]conn.Message, flows*perRound)
			rbuf := make([]conn.Message, 64)
			for i := range rbuf {
				rbuf[i].Buf = make([]byte, 2048)
			}
			moved := func() int {
				n := 0
				for _, s := range seen {
					if len(s) > 1 {
						n++
					}
				}
				return n
			}
			limit := time.Now().Add(8 * hash.MinPeriod)
			for round := 0; moved() < flows/2; round++ {
				if time.Now().After(limit) {
					t.Fatalf("after %d rounds over 8 periods only %d flows changed their address pair", round, moved())
				}
				// Bursts under load; every tenth round a pause longer
				// than IdleGap lets busy flows hand over.
				if round%10 == 9 {
					time.Sleep(60 * time.Millisecond)
				}
				for k := range perRound {
					for f := range flows {
						p := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(f)), next[f])
						next[f]++
						msgs[k*flows+f] = conn.Message{Buf: append(p, inner[f]...), Peer: linkB, Flow: a.Classify(inner[f])}
					}
				}
				if n, err := a.WriteBatch(msgs); err != nil || n != len(msgs) {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
				b.SetReadDeadline(time.Now().Add(5 * time.Second))
				for got := 0; got < len(msgs); {
					n, err := b.ReadBatch(rbuf)
					if err != nil {
						t.Fatalf("round %d: B read after %d of %d datagrams: %v", round, got, len(msgs), err)
					}
					for _, m := range rbuf[:n] {
						f, seq := binary.BigEndian.Uint32(m.Buf), binary.BigEndian.Uint32(m.Buf[4:])
						if seq != expect[f] {
							t.Fatalf("round %d: flow %d got datagram %d, want %d (lost or reordered)", round, f, seq, expect[f])
						}
						expect[f]++
						seen[f][[2]netip.Addr{m.OuterSrc.Addr(), m.OuterDst.Addr()}] = true
					}
					got += n
				}
			}
			if st := b.Stats(); st.DroppedForeign+st.DroppedOutsideRange != 0 {
				t.Errorf("B dropped %d foreign and %d outside-range datagrams", st.DroppedForeign, st.DroppedOutsideRange)
			}
			a.Close()
			b.Close()
			goleak.VerifyNone(t, leakCheck)
		})
	}
}

// TestRawReadsHostAddresses checks the Raw backend's second source: a
// reader blocked on the Raw listener wakes for an unspread datagram to
// our own address, and the caller's deadline still ends a read.
func TestRawReadsHostAddresses(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	h := newRoutedHosts(t, false)
	a, b := h.ends(t, backends[1], conn.Config{}, conn.Config{})
	buf := make([]byte, 100)

	got := make(chan string, 1)
	go func() {
		n, peer, err := a.ReadFromAddrPort(buf)
		if err != nil || peer != linkB {
			got <- fmt.Sprintf("error %v from %v", err, peer)
			return
		}
		got <- string(buf[:n])
	}()
	// The reader may or may not be blocked yet: either way it must get
	// the datagram, from the socket (unspread, to A's link address).
	if _, err := b.WriteFlow([]byte("unspread"), linkA, conn.Flow{}); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "unspread" {
		t.Fatalf("read %q, want %q", s, "unspread")
	}

	if err := a.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.ReadFromAddrPort(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v; want a timeout", err)
	}
}
