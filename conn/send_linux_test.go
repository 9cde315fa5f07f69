package conn_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// spreadPair opens, in one namespace where both prefixes are local, a
// conn spreading over A and a sink standing for the peer, whose range is
// B. The peer's canonical address is B's ::1.
func spreadPair(t *testing.T, cfg conn.Config) (*conn.FlowSpreadConn, *sink, netip.AddrPort) {
	t.Helper()
	ns := loopbackNetns(t, prefixA, prefixB)
	s := newSink(t, ns)
	peer := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), s.port)
	if !cfg.Range.Prefix.IsValid() {
		cfg.Range.Prefix = prefixA
	}
	cfg.Peers = []conn.Peer{{Addr: peer, Range: conn.Range{Prefix: prefixB}, Open: true}}
	c := listenIn(t, ns, cfg)
	return c, s, peer
}

func payload(i int, size int) []byte {
	p := bytes.Repeat([]byte{byte(i)}, size)
	binary.BigEndian.PutUint32(p, uint32(i))
	return p
}

func TestWriteFlowSpreads(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	ma, mb := mapper(t, prefixA, 0), mapper(t, prefixB, 0)
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	ecns := []flowaddr.ECN{flowaddr.NotECT, flowaddr.ECT1, flowaddr.ECT0, flowaddr.CE}
	for i := range 64 {
		h := uint64(i)*0x9e3779b97f4a7c15 + 1
		f := conn.Flow{Hash: h, ECN: ecns[i%4], Valid: true}
		p := payload(i, 100)
		if n, err := c.WriteFlow(p, peer, f); err != nil || n != len(p) {
			t.Fatalf("WriteFlow #%d = %d, %v", i, n, err)
		}
		a := s.read(t)
		if !bytes.Equal(a.payload, p) {
			t.Fatalf("#%d: payload %x, want %x", i, a.payload[:4], p[:4])
		}
		if want := netip.AddrPortFrom(addrOf(ma, h), port); a.src != want {
			t.Errorf("#%d: outer source %v, want %v", i, a.src, want)
		}
		if want := addrOf(mb, h); a.dst != want {
			t.Errorf("#%d: outer destination %v, want %v", i, a.dst, want)
		}
		if a.tclass != int(f.ECN) {
			t.Errorf("#%d: traffic class %d, want ECN %d", i, a.tclass, f.ECN)
		}
	}
	st := c.Stats()
	var perAddr uint64
	for _, n := range st.SentPerAddress {
		perAddr += n
	}
	if st.Sent != 64 || st.SentBytes != 6400 || perAddr != 64 || st.SentUnspread != 0 {
		t.Errorf("Stats: Sent %d SentBytes %d per-address sum %d unspread %d, want 64, 6400, 64, 0",
			st.Sent, st.SentBytes, perAddr, st.SentUnspread)
	}
}

func TestWriteUnspread(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	ma := mapper(t, prefixA, 0)
	stranger := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::7777"), s.port)
	tests := []struct {
		name string
		send func() (int, error)
		dst  netip.Addr
	}{
		{"unclassified flow", func() (int, error) { return c.WriteFlow([]byte("x"), peer, conn.Flow{}) }, peer.Addr()},
		{"unknown peer", func() (int, error) {
			return c.WriteFlow([]byte("x"), stranger, conn.Flow{Hash: 5, Valid: true})
		}, stranger.Addr()},
		{"net.UDPAddr", func() (int, error) {
			return c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(peer))
		}, peer.Addr()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.Stats().SentUnspread
			if _, err := tt.send(); err != nil {
				t.Fatal(err)
			}
			a := s.read(t)
			if a.dst != tt.dst {
				t.Errorf("outer destination %v, want %v", a.dst, tt.dst)
			}
			if _, spread := ma.BucketOf(a.src.Addr().As16()); spread {
				t.Errorf("outer source %v is in our spread range; want the default source", a.src)
			}
			if got := c.Stats().SentUnspread - before; got != 1 {
				t.Errorf("SentUnspread grew by %d, want 1", got)
			}
		})
	}
}

func TestWriteToFlowAddr(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	ma, mb := mapper(t, prefixA, 0), mapper(t, prefixB, 0)
	f := conn.Flow{Hash: 0xfeedface12345678, Valid: true}
	if _, err := c.WriteTo([]byte("hello"), &conn.FlowAddr{Peer: peer, Flow: f}); err != nil {
		t.Fatal(err)
	}
	a := s.read(t)
	if a.src.Addr() != addrOf(ma, f.Hash) || a.dst != addrOf(mb, f.Hash) {
		t.Errorf("outer pair %v -> %v, want %v -> %v", a.src.Addr(), a.dst, addrOf(ma, f.Hash), addrOf(mb, f.Hash))
	}
	if _, err := c.WriteTo([]byte("x"), &net.IPAddr{IP: net.IPv6loopback}); err == nil {
		t.Error("WriteTo a *net.IPAddr succeeded; want an error")
	}
}

// TestFlowLabel checks that the flow label (RFC 6438) shows an observer no
// more than the outer addresses do: one nonzero label for every packet of
// a flow, the same label for every flow of an address pair, so at most
// 2^Bits labels on the wire however many flows there are. (A label per
// flow, as flowspread once set, let an observer count flows one by one.)
// Distinct pairs still get distinct labels, for hops that hash the label.
func TestFlowLabel(t *testing.T) {
	tests := []struct {
		name              string
		ourBits, peerBits int // 0: that end does not spread
		pairBits          int // the address pairs number at most 2^pairBits
	}{
		{"both ends spread over 3 bits", 3, 3, 3},
		{"our 2 bits, the peer's 4", 2, 4, 4},
		{"only destinations spread", 0, 3, 3},
		{"only sources spread", 3, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := loopbackNetns(t, prefixA, prefixB)
			s := newSink(t, ns)
			peer := conn.Peer{Addr: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), s.port)}
			if tt.peerBits > 0 {
				peer.Range.Prefix, peer.Range.Bits = prefixB, tt.peerBits
			}
			cfg := conn.Config{FlowLabel: true, Peers: []conn.Peer{peer}}
			if tt.ourBits > 0 {
				cfg.Range.Prefix, cfg.Range.Bits = prefixA, tt.ourBits
			}
			c := listenIn(t, ns, cfg)

			type pair struct{ src, dst netip.Addr }
			labelOf := map[pair]uint32{}
			labels := map[uint32]bool{}
			const flows = 256
			for i := range flows {
				f := conn.Flow{Hash: uint64(i+1) * 0x9e3779b97f4a7c15, Valid: true}
				for range 2 {
					if _, err := c.WriteFlow([]byte("x"), peer.Addr, f); err != nil {
						t.Fatal(err)
					}
				}
				a1, a2 := s.read(t), s.read(t)
				l1, l2 := a1.flowinfo&0xfffff, a2.flowinfo&0xfffff
				if l1 == 0 || l1 != l2 {
					t.Fatalf("flow %d: labels %#x and %#x, want one nonzero label per flow", i, l1, l2)
				}
				p := pair{a1.src.Addr(), a1.dst}
				if l, seen := labelOf[p]; seen && l != l1 {
					t.Fatalf("flow %d: label %#x, but an earlier flow on the pair %v -> %v had %#x: the label must depend on the address pair only", i, l1, p.src, p.dst, l)
				}
				labelOf[p] = l1
				labels[l1] = true
			}
			if limit := 1 << tt.pairBits; len(labelOf) > limit {
				t.Fatalf("%d flows used %d address pairs, want at most %d", flows, len(labelOf), limit)
			}
			if len(labels) != len(labelOf) {
				t.Errorf("%d flows on %d address pairs showed %d distinct flow labels, want one per pair", flows, len(labelOf), len(labels))
			}
		})
	}
}

func TestWriteBatchGSO(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	if !c.Stats().GSO {
		t.Skip("the kernel has no UDP GSO (UDP_SEGMENT, Linux 4.18)")
	}
	ma, mb := mapper(t, prefixA, 0), mapper(t, prefixB, 0)
	// Three flows in runs, as a VPN reading its TUN in batches sees them:
	// 20 of flow 1 (the last shorter), 1 of flow 2, 30 of flow 3, and two
	// more of flow 1 after a size change.
	var msgs []conn.Message
	add := func(h uint64, n, size int) {
		for range n {
			msgs = append(msgs, conn.Message{Buf: payload(len(msgs), size), Peer: peer, Flow: conn.Flow{Hash: h, Valid: true}})
		}
	}
	add(1<<60, 19, 1200)
	add(1<<60, 1, 700)
	add(2<<60, 1, 1200)
	add(3<<60, 30, 1000)
	add(1<<60, 2, 1300)
	n, err := c.WriteBatch(msgs)
	if err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(msgs))
	}
	for i, m := range msgs {
		if m.N != len(m.Buf) {
			t.Errorf("msgs[%d].N = %d, want %d", i, m.N, len(m.Buf))
		}
		a := s.read(t)
		if !bytes.Equal(a.payload, m.Buf) {
			t.Fatalf("datagram %d: %d bytes starting %x, want %d starting %x", i, len(a.payload), a.payload[:4], len(m.Buf), m.Buf[:4])
		}
		if a.src.Addr() != addrOf(ma, m.Flow.Hash) || a.dst != addrOf(mb, m.Flow.Hash) {
			t.Errorf("datagram %d: outer pair %v -> %v, want %v -> %v", i, a.src.Addr(), a.dst, addrOf(ma, m.Flow.Hash), addrOf(mb, m.Flow.Hash))
		}
	}
	// Runs: flow 1 (20, ending shorter), flow 2 alone, flow 3 (30), flow 1 (2).
	if st := c.Stats(); st.GSOSends != 3 || st.Sent != uint64(len(msgs)) {
		t.Errorf("Stats: GSOSends %d, Sent %d; want 3, %d", st.GSOSends, st.Sent, len(msgs))
	}
}

// TestGSOFallback makes the kernel refuse GSO and checks that every
// datagram still arrives and that GSO is then off for good.
func TestGSOFallback(t *testing.T) {
	tests := []struct {
		name  string
		setup []string
		size  int
	}{
		// A segment (1250 + 48 bytes of headers) larger than the route's
		// MTU: the kernel refuses GSO with EINVAL, while a plain datagram
		// of that size is fragmented and delivered.
		{"segment above path MTU", []string{"ip", "-6", "route", "change", "local", prefixB.String(), "dev", "lo", "mtu", "1280"}, 1250},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := loopbackNetns(t, prefixA, prefixB)
			ns.Run(t, tt.setup...)
			s := newSink(t, ns)
			peer := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), s.port)
			c := listenIn(t, ns, conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: peer, Range: conn.Range{Prefix: prefixB}, Open: true}}})
			if !c.Stats().GSO {
				t.Skip("the kernel has no UDP GSO")
			}
			msgs := make([]conn.Message, 40)
			for i := range msgs {
				msgs[i] = conn.Message{Buf: payload(i, tt.size), Peer: peer, Flow: conn.Flow{Hash: 42 << 50, Valid: true}}
			}
			if n, err := c.WriteBatch(msgs); err != nil || n != len(msgs) {
				t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(msgs))
			}
			for i := range msgs {
				a := s.read(t)
				if !bytes.Equal(a.payload, msgs[i].Buf) {
					t.Fatalf("datagram %d: got %d bytes starting %x", i, len(a.payload), a.payload[:4])
				}
			}
			st := c.Stats()
			if st.GSO || st.GSOSends != 0 || st.Sent != 40 || st.SendErrors != 0 {
				t.Errorf("Stats: GSO %v, GSOSends %d, Sent %d, SendErrors %d; want false, 0, 40, 0", st.GSO, st.GSOSends, st.Sent, st.SendErrors)
			}
		})
	}
}

func TestWriteBatchBadPeer(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	msgs := []conn.Message{
		{Buf: []byte("a"), Peer: peer},
		{Buf: []byte("b"), Peer: peer, Flow: conn.Flow{Hash: 1, Valid: true}},
		{Buf: []byte("c")}, // no destination
		{Buf: []byte("d"), Peer: peer},
	}
	n, err := c.WriteBatch(msgs)
	if n != 2 || err == nil {
		t.Fatalf("WriteBatch = %d, %v; want 2 and an error for msgs[2]", n, err)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Errorf("error %T is not a *net.OpError", err)
	}
	for _, want := range []string{"a", "b"} {
		if a := s.read(t); string(a.payload) != want {
			t.Errorf("got %q, want %q", a.payload, want)
		}
	}
	s.expectNone(t)
}

func TestWriteAllocs(t *testing.T) {
	c, _, peer := spreadPair(t, conn.Config{FlowLabel: true})
	p := make([]byte, 1200)
	f := conn.Flow{Hash: 99, ECN: flowaddr.ECT0, Valid: true}
	msgs := make([]conn.Message, 64)
	for i := range msgs {
		msgs[i] = conn.Message{Buf: p, Peer: peer, Flow: conn.Flow{Hash: uint64(i / 8), Valid: true}}
	}
	inner := udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", 1000, 53)
	fa := &conn.FlowAddr{Peer: peer, Flow: f}
	tests := []struct {
		name string
		run  func()
	}{
		{"WriteFlow", func() { c.WriteFlow(p, peer, f) }},
		{"WriteFlow unspread", func() { c.WriteFlow(p, peer, conn.Flow{}) }},
		{"WriteTo FlowAddr", func() { c.WriteTo(p, fa) }},
		{"WriteBatch", func() { c.WriteBatch(msgs) }},
		{"Classify", func() { c.Classify(inner) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run() // warm the pools
			if a := testing.AllocsPerRun(100, tt.run); a != 0 {
				t.Errorf("%s allocates %.1f times per call, want 0", tt.name, a)
			}
		})
	}
	if st := c.Stats(); st.SendErrors != 0 {
		t.Errorf("SendErrors = %d", st.SendErrors)
	}
}

// TestWriteConcurrent sends from several goroutines at once (run it with
// -race): every datagram arrives intact and the counters add up.
func TestWriteConcurrent(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	const writers, rounds, batch = 4, 10, 32
	errc := make(chan error, writers)
	for w := range writers {
		go func() {
			msgs := make([]conn.Message, batch)
			for r := range rounds {
				for i := range msgs {
					id := (w*rounds+r)*batch + i
					msgs[i] = conn.Message{Buf: payload(id, 64), Peer: peer, Flow: conn.Flow{Hash: uint64(id % 7), Valid: true}}
				}
				if n, err := c.WriteBatch(msgs); err != nil || n != batch {
					errc <- fmt.Errorf("writer %d: WriteBatch = %d, %v", w, n, err)
					return
				}
				if _, err := c.WriteFlow(payload(-1, 64), peer, conn.Flow{}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	const total = writers * rounds * (batch + 1)
	seen := map[uint32]bool{}
	for range total {
		a := s.read(t)
		if len(a.payload) != 64 {
			t.Fatalf("datagram of %d bytes, want 64", len(a.payload))
		}
		if id := binary.BigEndian.Uint32(a.payload); id != ^uint32(0) {
			seen[id] = true
		}
	}
	if len(seen) != writers*rounds*batch {
		t.Errorf("%d distinct batch datagrams arrived, want %d", len(seen), writers*rounds*batch)
	}
	if st := c.Stats(); st.Sent != total || st.SentBytes != total*64 {
		t.Errorf("Stats: Sent %d, SentBytes %d; want %d, %d", st.Sent, st.SentBytes, total, total*64)
	}
}
