package conn_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// The port tests' IPv4 path (testutil.NewIPv4Path): a client behind a
// router, which masquerades it when the test asks for a NAT, and a
// server with one address and one port.
var (
	v4Client     = testutil.IPv4Client
	v4RouterOut  = testutil.IPv4Public
	v4Server     = testutil.IPv4Server
	clientPorts  = conn.PortRange{First: 40000, Bits: 4}
	v4ClientPort = uint16(5000)
	v4ServerPort = uint16(6000)
)

// v4Path builds the port tests' IPv4 path; with nat the router rewrites
// the client's spread ports to random ones.
func v4Path(t *testing.T, nat bool) (client, router, server *testutil.Netns) {
	t.Helper()
	last := uint16(int(clientPorts.First) + clientPorts.Len() - 1)
	return testutil.NewIPv4Path(t, "c0", "s0", nat, clientPorts.First, last)
}

// echoServer stands for a VPN server on c: every datagram is authentic
// and carries its flow's hash and a request flag; it observes each and
// answers requests on the same flow, and records where each flow came
// from.
type echoServer struct {
	c    *conn.FlowSpreadConn
	mu   sync.Mutex
	from map[uint64]netip.AddrPort // flow hash -> its last request's outer source
}

func newEchoServer(t *testing.T, c *conn.FlowSpreadConn) *echoServer {
	s := &echoServer{c: c, from: map[uint64]netip.AddrPort{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, info, err := c.ReadMsg(buf)
			if err != nil {
				return
			}
			if n != 9 {
				continue
			}
			f := conn.Flow{Hash: binary.BigEndian.Uint64(buf), Valid: true}
			c.Observe(&info, f)
			if buf[8] != 1 {
				continue
			}
			s.mu.Lock()
			s.from[f.Hash] = info.OuterSrc
			s.mu.Unlock()
			reply := append([]byte(nil), buf[:9]...)
			reply[8] = 0
			if _, err := c.WriteFlow(reply, info.Peer, f); err != nil {
				t.Errorf("server: answer: %v", err)
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

// exchange sends one request on each flow from c to peer and reads the
// answers, returning each flow's answer's outer pair.
func exchange(t *testing.T, c *conn.FlowSpreadConn, peer netip.AddrPort, hashes []uint64) map[uint64][2]netip.AddrPort {
	t.Helper()
	for _, h := range hashes {
		msg := binary.BigEndian.AppendUint64(nil, h)
		if _, err := c.WriteFlow(append(msg, 1), peer, conn.Flow{Hash: h, Valid: true}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	got := map[uint64][2]netip.AddrPort{}
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for len(got) < len(hashes) {
		n, info, err := c.ReadMsg(buf)
		if err != nil {
			t.Fatalf("%d of %d answers: %v", len(got), len(hashes), err)
		}
		if n != 9 || buf[8] != 0 {
			continue
		}
		h := binary.BigEndian.Uint64(buf)
		c.Observe(&info, conn.Flow{Hash: h, Valid: true})
		got[h] = [2]netip.AddrPort{info.OuterSrc, info.OuterDst}
	}
	return got
}

// testHashes returns n flow hashes that cover every port of the client's
// range at least once.
func testHashes(n int) []uint64 {
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = uint64(i)*0x9e3779b97f4a7c15 + uint64(i)<<28
	}
	return hs
}

// TestPortSpreadIPv4 spreads a client's flows over its source ports on an
// IPv4 path, to a server with one address and one port that learns each
// flow's port pair from the client's traffic: routed, and through a real
// masquerade that rewrites the spread ports. Each flow's answer must come
// back to the client's port for that flow.
func TestPortSpreadIPv4(t *testing.T) {
	for _, nat := range []bool{false, true} {
		name := map[bool]string{false: "routed", true: "masquerade"}[nat]
		t.Run(name, func(t *testing.T) {
			clientNS, _, serverNS := v4Path(t, nat)
			server := netip.AddrPortFrom(v4Server, v4ServerPort)
			clientAt := netip.AddrPortFrom(v4Client, v4ClientPort)
			theirs := conn.Range{Ports: clientPorts}
			if nat {
				clientAt = netip.AddrPortFrom(v4RouterOut, v4ClientPort)
				theirs = conn.Range{Ports: conn.PortRange{Bits: clientPorts.Bits, Translated: true}}
			}
			key := [16]byte{7}
			c := listenIn(t, clientNS, conn.Config{Port: v4ClientPort, Range: conn.Range{Ports: clientPorts},
				Key: key, Symmetric: true, Peers: []conn.Peer{{Addr: server}}})
			s := listenIn(t, serverNS, conn.Config{Port: v4ServerPort, Key: key, Symmetric: true,
				Peers: []conn.Peer{{Addr: clientAt, Range: theirs}}})
			srv := newEchoServer(t, s)

			hashes := testHashes(64)
			for round := range 3 {
				got := exchange(t, c, server, hashes)
				for _, h := range hashes {
					want := netip.AddrPortFrom(v4Client, clientPorts.PortOf(h))
					if dst := got[h][1]; dst != want {
						t.Errorf("round %d: flow %#x answered to %v, want its own port %v", round, h, dst, want)
					}
				}
			}
			srv.mu.Lock()
			ports := map[uint16]bool{}
			for _, h := range hashes {
				src := srv.from[h]
				ports[src.Port()] = true
				want := netip.AddrPortFrom(v4Client, clientPorts.PortOf(h))
				if nat {
					want = netip.AddrPortFrom(v4RouterOut, src.Port())
					if clientPorts.Contains(src.Port()) {
						t.Errorf("flow %#x arrived from port %d: the NAT did not translate it, so the test proves nothing about learning", h, src.Port())
					}
				}
				if src != want {
					t.Errorf("flow %#x arrived from %v, want %v", h, src, want)
				}
			}
			srv.mu.Unlock()
			if len(ports) != clientPorts.Len() {
				t.Errorf("the server saw %d source ports, want %d: one per port of the range", len(ports), clientPorts.Len())
			}
			cs, ss := c.Stats(), s.Stats()
			var perPort uint64
			for _, n := range cs.SentPerPort {
				perPort += n
			}
			if perPort != cs.Sent || cs.SentUnspread != 0 {
				t.Errorf("client: %d sent, %d counted per port, %d unspread: every datagram should leave from a port of the range", cs.Sent, perPort, cs.SentUnspread)
			}
			if ss.PathsOpened != uint64(clientPorts.Len()) || ss.SentWaiting != 0 {
				t.Errorf("server: %d paths opened, %d sent waiting; want %d and 0 (each answer follows a request that opened its pair)", ss.PathsOpened, ss.SentWaiting, clientPorts.Len())
			}
			t.Logf("client sent %d on %d ports; server opened %d paths, saw %d source ports", cs.Sent, len(cs.SentPerPort), ss.PathsOpened, len(ports))
		})
	}
}

// TestPortsBatch sends batches of mixed flows, each datagram from its
// flow's port of the range, through the io_uring that sends a batch from
// many sockets at once and through sendmmsg per socket; a plain socket
// checks that every datagram arrived once, from its flow's port, with
// its payload, in order within each flow.
func TestPortsBatch(t *testing.T) {
	for _, ring := range []bool{true, false} {
		t.Run(map[bool]string{true: "io_uring", false: "sendmmsg"}[ring], func(t *testing.T) {
			ns := loopbackNetns(t)
			s := newSink(t, ns)
			dst := netip.AddrPortFrom(netip.IPv6Loopback(), s.port)
			ports := conn.PortRange{First: 40000, Bits: 5}
			c := listenIn(t, ns, conn.Config{Range: conn.Range{Ports: ports}, Peers: []conn.Peer{{Addr: dst}}, FlowLabel: true})
			if !ring {
				conn.DropSendRing(c)
			} else if !c.Stats().RingSend {
				t.Skip("no io_uring on this kernel: batches use sendmmsg per socket (the other subtest)")
			}
			hashes := testHashes(48)
			var msgs []conn.Message
			for round := range 4 {
				for i, h := range hashes {
					msgs = append(msgs, conn.Message{Buf: fmt.Appendf(nil, "%d %d", i, round), Peer: dst, Flow: conn.Flow{Hash: h, Valid: true}})
				}
			}
			if n, err := c.WriteBatch(msgs); n != len(msgs) || err != nil {
				t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(msgs))
			}
			next := make([]int, len(hashes))       // the next round expected of each flow
			labels := map[uint16]map[uint32]bool{} // source port -> flow labels seen
			for range msgs {
				a := s.read(t)
				if labels[a.src.Port()] == nil {
					labels[a.src.Port()] = map[uint32]bool{}
				}
				labels[a.src.Port()][a.flowinfo&0xfffff] = true
				var i, round int
				if _, err := fmt.Sscanf(string(a.payload), "%d %d", &i, &round); err != nil {
					t.Fatalf("payload %q: %v", a.payload, err)
				}
				if want := ports.PortOf(hashes[i]); a.src.Port() != want {
					t.Errorf("flow %d round %d came from port %d, want %d", i, round, a.src.Port(), want)
				}
				if round != next[i] {
					t.Errorf("flow %d: round %d arrived when %d was due", i, round, next[i])
				}
				next[i] = round + 1
			}
			s.expectNone(t)
			// Linux hashes a nonzero label in place of the ports: one
			// label per port pair keeps the ports' flows apart there.
			distinct := map[uint32]bool{}
			for port, ls := range labels {
				if len(ls) != 1 {
					t.Errorf("port %d carried %d flow labels, want one", port, len(ls))
				}
				for l := range ls {
					distinct[l] = true
				}
			}
			if len(distinct) != len(labels) || distinct[0] {
				t.Errorf("%d ports carried %d distinct flow labels (zero among them: %v): each port pair needs its own nonzero label", len(labels), len(distinct), distinct[0])
			}
			st := c.Stats()
			if st.Sent != uint64(len(msgs)) || st.SendErrors != 0 {
				t.Errorf("Stats: sent %d, errors %d; want %d, 0", st.Sent, st.SendErrors, len(msgs))
			}
		})
	}
}

// TestPortsReopen closes a conn that spread over ports and opens one on
// the same ports at once, as a VPN that changes its listen port or
// restarts does: Close must leave none of the range's sockets bound (the
// send ring holds them until it is torn down).
func TestPortsReopen(t *testing.T) {
	ns := loopbackNetns(t)
	cfg := conn.Config{Port: 5000, Range: conn.Range{Ports: conn.PortRange{First: 40000, Bits: 4}},
		Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("[::1]:6000")}}}
	for i := range 3 {
		var c *conn.FlowSpreadConn
		if err := ns.Do(func() (err error) { c, err = conn.Listen(cfg); return err }); err != nil {
			t.Fatalf("open %d: %v", i+1, err)
		}
		msgs := make([]conn.Message, 16)
		for k := range msgs {
			msgs[k] = conn.Message{Buf: []byte("x"), Peer: cfg.Peers[0].Addr, Flow: conn.Flow{Hash: testHashes(16)[k], Valid: true}}
		}
		if _, err := c.WriteBatch(msgs); err != nil {
			t.Fatalf("send %d: %v", i+1, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
}

// TestPortsRingECN sends mixed flows over the range's ports through the
// send ring, which sends a datagram without a control message where its
// socket's own IPV6_TCLASS marks its ECN, and has each socket's option
// follow the codepoint its flows want. Every datagram must arrive with
// its flow's ECN however the flows change codepoint: all ECT(0) (the
// sockets follow), then all Not-ECT (their first datagrams must carry
// the codepoint against the followed option), then four codepoints
// mixed. The same must hold where the kernel refuses IORING_OP_SEND's
// destination, as one before Linux 6.1 does: the ring then falls back to
// IORING_OP_SENDMSG for good.
func TestPortsRingECN(t *testing.T) {
	for _, refused := range []bool{false, true} {
		t.Run(map[bool]string{false: "sendto", true: "sendto-refused"}[refused], func(t *testing.T) {
			ns := loopbackNetns(t)
			s := newSink(t, ns)
			dst := netip.AddrPortFrom(netip.IPv6Loopback(), s.port)
			ports := conn.PortRange{First: 40000, Bits: 5}
			c := listenIn(t, ns, conn.Config{Range: conn.Range{Ports: ports}, Peers: []conn.Peer{{Addr: dst}}})
			if !c.Stats().RingSend {
				t.Skip("no io_uring on this kernel: no send ring")
			}
			if refused {
				conn.BreakRingSendto(c)
			}
			hashes := testHashes(48)
			sent := 0
			send := func(rounds int, ecnOf func(flow, round int) flowaddr.ECN) {
				t.Helper()
				var msgs []conn.Message
				for round := range rounds {
					for i, h := range hashes {
						msgs = append(msgs, conn.Message{Buf: fmt.Appendf(nil, "%d %d", i, round), Peer: dst, Flow: conn.Flow{Hash: h, ECN: ecnOf(i, round), Valid: true}})
					}
				}
				for i := 0; i < len(msgs); i += 64 {
					if n, err := c.WriteBatch(msgs[i:min(i+64, len(msgs))]); err != nil || n != min(64, len(msgs)-i) {
						t.Fatalf("WriteBatch = %d, %v", n, err)
					}
				}
				for range msgs {
					a := s.read(t)
					var i, round int
					if _, err := fmt.Sscanf(string(a.payload), "%d %d", &i, &round); err != nil {
						t.Fatalf("payload %q: %v", a.payload, err)
					}
					if want := ecnOf(i, round); a.tclass != int(want) {
						t.Errorf("flow %d round %d: traffic class %d, want ECN %d", i, round, a.tclass, want)
					}
					if want := ports.PortOf(hashes[i]); a.src.Port() != want {
						t.Errorf("flow %d round %d came from port %d, want %d", i, round, a.src.Port(), want)
					}
				}
				s.expectNone(t)
				sent += len(msgs)
			}

			send(24, func(int, int) flowaddr.ECN { return flowaddr.ECT0 })
			sendto, tclass := conn.RingSendto(c)
			if sendto == refused {
				t.Fatalf("ring sends with IORING_OP_SEND: %v, want %v", sendto, !refused)
			}
			followed := 0
			for _, e := range tclass {
				if e == flowaddr.ECT0 {
					followed++
				}
			}
			// 48 flows over 32 ports, 24 datagrams each: every port
			// with a flow saw at least sendtoLead datagrams of ECT(0).
			// (Where IORING_OP_SEND is refused, the options stop
			// following when the first is.)
			if used := usedPorts(ports, hashes); !refused && followed != used {
				t.Errorf("%d of the %d ports in use mark ECT(0) by themselves, want all", followed, used)
			}
			send(24, func(int, int) flowaddr.ECN { return flowaddr.NotECT })
			ecns := []flowaddr.ECN{flowaddr.NotECT, flowaddr.ECT0, flowaddr.ECT1, flowaddr.CE}
			send(8, func(i, round int) flowaddr.ECN { return ecns[(i+round/4)%4] })
			if st := c.Stats(); st.Sent != uint64(sent) || st.SendErrors != 0 {
				t.Errorf("Stats: sent %d, errors %d; want %d, 0", st.Sent, st.SendErrors, sent)
			}
		})
	}
}

// usedPorts counts the ports of r that hashes map to.
func usedPorts(r conn.PortRange, hashes []uint64) int {
	seen := map[uint16]bool{}
	for _, h := range hashes {
		seen[r.PortOf(h)] = true
	}
	return len(seen)
}

// TestPortsRingGSO sends mixed flows of equal-sized datagrams over the
// range's ports through the send ring, which merges a batch's datagrams
// that leave from one port to one outer pair, with one ECN, into one UDP
// GSO send (msgRing.merge). Each must still arrive on its own, once, from
// its flow's port, with its ECN and in order within its flow. Where the
// kernel refuses the super-datagrams (here: segments longer than the
// link's MTU, which plain datagrams may be, fragmented), every datagram
// must still arrive, sent one by one, and GSO turns off.
func TestPortsRingGSO(t *testing.T) {
	for _, refused := range []bool{false, true} {
		t.Run(map[bool]string{false: "merged", true: "refused"}[refused], func(t *testing.T) {
			ns := loopbackNetns(t)
			size := 300
			if refused {
				ns.Run(t, "ip", "link", "set", "lo", "mtu", "1500")
				size = 2000
			}
			s := newSink(t, ns)
			dst := netip.AddrPortFrom(netip.IPv6Loopback(), s.port)
			ports := conn.PortRange{First: 40000, Bits: 5}
			c := listenIn(t, ns, conn.Config{Range: conn.Range{Ports: ports}, Peers: []conn.Peer{{Addr: dst}}})
			switch st := c.Stats(); {
			case !st.RingSend:
				t.Skip("no io_uring on this kernel: no send ring")
			case !st.GSO:
				t.Skip("no UDP GSO on this kernel")
			}
			ecns := []flowaddr.ECN{flowaddr.NotECT, flowaddr.ECT0, flowaddr.ECT1, flowaddr.CE}
			hashes := testHashes(48)
			const rounds = 8
			var msgs []conn.Message
			for round := range rounds {
				for i, h := range hashes {
					p := make([]byte, size)
					binary.BigEndian.PutUint32(p, uint32(i))
					binary.BigEndian.PutUint32(p[4:], uint32(round))
					msgs = append(msgs, conn.Message{Buf: p, Peer: dst, Flow: conn.Flow{Hash: h, ECN: ecns[i%4], Valid: true}})
				}
			}
			for i := 0; i < len(msgs); i += 64 {
				if n, err := c.WriteBatch(msgs[i:min(i+64, len(msgs))]); err != nil || n != min(64, len(msgs)-i) {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
			}
			next := make([]int, len(hashes))
			for range msgs {
				a := s.read(t)
				if len(a.payload) != size {
					t.Fatalf("a datagram of %d bytes arrived, want %d: the super-datagram was not cut", len(a.payload), size)
				}
				i, round := int(binary.BigEndian.Uint32(a.payload)), int(binary.BigEndian.Uint32(a.payload[4:]))
				if i >= len(hashes) || round != next[i] {
					t.Fatalf("flow %d: round %d arrived when %d was due", i, round, next[i])
				}
				next[i]++
				if want := ports.PortOf(hashes[i]); a.src.Port() != want {
					t.Errorf("flow %d round %d came from port %d, want %d", i, round, a.src.Port(), want)
				}
				if want := ecns[i%4]; a.tclass != int(want) {
					t.Errorf("flow %d round %d: traffic class %d, want ECN %d", i, round, a.tclass, want)
				}
			}
			s.expectNone(t)
			st := c.Stats()
			if st.Sent != uint64(len(msgs)) || st.SendErrors != 0 {
				t.Errorf("Stats: sent %d, errors %d; want %d, 0", st.Sent, st.SendErrors, len(msgs))
			}
			switch {
			case !refused && st.GSOSends == 0:
				t.Error("no datagrams went out merged (Stats.GSOSends 0)")
			case refused && (st.GSO || st.GSOSends != 0):
				t.Errorf("Stats: GSO %v after %d GSO sends; want GSO off after the kernel refused every one", st.GSO, st.GSOSends)
			}
		})
	}
}
