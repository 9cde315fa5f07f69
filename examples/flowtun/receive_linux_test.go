package main

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

// observed is one call of a tunnel's observe, copied: the tunnel reuses
// the RecvInfo it passes.
type observed struct {
	info conn.RecvInfo
	flow conn.Flow
}

// loopbackEnd is a tunnel end without a TUN device: a conn on loopback
// and the crypto state, enough for receive, sendKeepalive and the
// keepalive loop. Its observe records every call.
type loopbackEnd struct {
	*tunnel
	calls []observed
}

// newLoopbackPair opens two tunnel ends on [::1], each the other's peer,
// with one PSK and hash key, started at now (wall clock nanoseconds).
// They need no privileges: no TUN device, no spread prefix.
func newLoopbackPair(t *testing.T, now uint64) (a, b *loopbackEnd) {
	t.Helper()
	hashKey, err := hashKeyFromPSK(testPSK)
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.IPv6Loopback()
	listen := func(peer netip.AddrPort) *conn.FlowSpreadConn {
		c, err := conn.Listen(conn.Config{Key: hashKey, Symmetric: true, Probe: true, Peers: []conn.Peer{{Addr: peer}}})
		if err != nil {
			t.Fatalf("conn on loopback: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	port := func(c *conn.FlowSpreadConn) netip.AddrPort {
		return netip.AddrPortFrom(lo, c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	}
	// A's peer is a stand-in until B has a port.
	standIn := netip.AddrPortFrom(lo, 9)
	ca := listen(standIn)
	addrA := port(ca)
	cb := listen(addrA)
	addrB := port(cb)
	if err := ca.SetPeer(conn.Peer{Addr: addrB}); err != nil {
		t.Fatal(err)
	}
	ca.RemovePeer(standIn)
	end := func(c *conn.FlowSpreadConn, self, peer netip.AddrPort) *loopbackEnd {
		send, recv, err := directionKeys(testPSK, self, peer)
		if err != nil {
			t.Fatal(err)
		}
		e := &loopbackEnd{tunnel: &tunnel{
			cfg:  config{peer: peer, listenPort: self.Port(), hashKey: hashKey, symmetric: true},
			self: self, conn: c, clock: wallClock, done: make(chan struct{}), start: time.Now(),
			window:       newReplayWindow(restartFloor(now)),
			keepaliveBuf: make([]byte, overhead), keepaliveMsg: make([]conn.Message, 1),
		}}
		if e.seal, err = newSealer(send, now); err != nil {
			t.Fatal(err)
		}
		if e.open, err = newOpener(recv); err != nil {
			t.Fatal(err)
		}
		e.observe = func(info *conn.RecvInfo, f conn.Flow) { e.calls = append(e.calls, observed{*info, f}) }
		return e
	}
	return end(ca, addrA, addrB), end(cb, addrB, addrA)
}

// sealed returns inner sealed by s as a datagram in a fresh buffer.
func sealed(t *testing.T, s *sealer, inner []byte) []byte {
	t.Helper()
	buf := make([]byte, overhead+len(inner))
	copy(buf[headerLen:], inner)
	d, err := s.seal(buf, len(inner))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReceiveObserves checks that receive reports to Observe exactly the
// authentic datagrams it has not seen, each once, with its inner flow
// and the outer addresses it came on; and that a tampered, replayed,
// too old or garbage datagram is never reported, whatever outer pair it
// came on, so a forged datagram cannot move where we send.
func TestReceiveObserves(t *testing.T) {
	now := uint64(time.Now().UnixNano())
	a, b := newLoopbackPair(t, now)
	inner := testutil.Build(
		testutil.IPv6(netip.MustParseAddr("fd00:99::1"), netip.MustParseAddr("fd00:99::2")),
		testutil.UDP(4000, 53), gopacket.Payload("query"))
	wantFlow := b.conn.Classify(inner)
	if !wantFlow.Valid {
		t.Fatal("the inner packet has no flow")
	}
	// A spread pair it might have come on; the peer's canonical address
	// is what the conn reports as Peer.
	src := netip.MustParseAddrPort("[2001:db8:a::17]:51820")
	dst := netip.MustParseAddrPort("[2001:db8:b::29]:51820")
	msg := func(d []byte) *conn.Message {
		m := &conn.Message{Buf: bytes.Clone(d), Peer: a.self, OuterSrc: src, OuterDst: dst}
		m.N = len(m.Buf)
		return m
	}

	good := sealed(t, a.seal, inner)
	got, f, err := b.receive(msg(good))
	if err != nil || !bytes.Equal(got, inner) {
		t.Fatalf("authentic datagram: inner %x, error %v; want %x", got, err, inner)
	}
	if f != wantFlow {
		t.Errorf("receive returned flow %+v, want %+v", f, wantFlow)
	}
	want := []observed{{conn.RecvInfo{Peer: a.self, OuterSrc: src, OuterDst: dst}, wantFlow}}
	if len(b.calls) != 1 || b.calls[0] != want[0] {
		t.Fatalf("Observe calls after one authentic datagram: %+v, want %+v", b.calls, want)
	}

	tampered := sealed(t, a.seal, inner)
	tampered[headerLen+3] ^= 0x40
	truncated := sealed(t, a.seal, inner)
	truncated = truncated[:len(truncated)-1]
	otherType := sealed(t, a.seal, inner)
	otherType[0] = 0x02
	// A's datagrams from before B's start, less the clock skew B allows.
	keyA, _, err := directionKeys(testPSK, a.self, b.self)
	if err != nil {
		t.Fatal(err)
	}
	oldSealer, err := newSealer(keyA, now-uint64(2*maxClockSkew))
	if err != nil {
		t.Fatal(err)
	}
	tooOld := sealed(t, oldSealer, inner)
	// B's own datagram sent back to it: authentic under B's send key,
	// not under the key B opens with (its counter a fresh one, ahead).
	b.seal.catchUp(now + uint64(2*maxCounterLag))
	reflected := sealed(t, b.seal, inner)
	for _, tc := range []struct {
		name    string
		dgram   []byte
		wantErr error
	}{
		{"replayed", good, errReplayed},
		{"tampered", tampered, errAuth},
		{"truncated", truncated, errAuth},
		{"another type", otherType, errMalformed},
		{"too old", tooOld, errTooOld},
		{"reflected", reflected, errAuth},
		{"garbage", bytes.Repeat([]byte{0x01, 0xa5}, 40), errAuth},
		{"short", []byte{typeData, 0, 0, 0}, errMalformed},
		{"empty", nil, errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := b.receive(msg(tc.dgram))
			if err != tc.wantErr || got != nil {
				t.Errorf("receive: inner %x, error %v; want nil, %v", got, err, tc.wantErr)
			}
			if len(b.calls) != 1 {
				t.Errorf("Observe was called for a %s datagram: %+v", tc.name, b.calls[1:])
			}
		})
	}

	// The replay window is untouched by all that: the next authentic
	// datagram is observed.
	if _, _, err := b.receive(msg(sealed(t, a.seal, inner))); err != nil || len(b.calls) != 2 {
		t.Errorf("the next authentic datagram: error %v, %d Observe calls; want nil, 2", err, len(b.calls))
	}
}

// TestKeepaliveAuthentic sends a keepalive from A over loopback and reads
// it at B: it authenticates, carries no inner packet (nothing for the
// TUN device, no error), is reported to Observe with an unclassified
// flow, and both ends count it.
func TestKeepaliveAuthentic(t *testing.T) {
	a, b := newLoopbackPair(t, uint64(time.Now().UnixNano()))
	if err := a.sendKeepalive(newTunnelClock(a.tunnel)); err != nil {
		t.Fatal(err)
	}
	if s := a.stats(); s.KeepalivesSent != 1 || s.Sent != 1 || s.Conn.SentUnspread != 1 {
		t.Errorf("A after one keepalive: %d keepalives, %d sent, %d unspread; want 1 each", s.KeepalivesSent, s.Sent, s.Conn.SentUnspread)
	}
	msgs := []conn.Message{{Buf: make([]byte, rxBufLen)}}
	b.conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a safety net: loopback delivers at once
	n, err := b.conn.ReadBatch(msgs)
	if err != nil || n != 1 {
		t.Fatalf("read the keepalive: %d datagrams, %v", n, err)
	}
	if msgs[0].N != overhead {
		t.Errorf("keepalive of %d bytes, want %d (header and tag)", msgs[0].N, overhead)
	}
	inner, f, err := b.receive(&msgs[0])
	if inner != nil || err != nil {
		t.Errorf("receive a keepalive: inner %x, error %v; want nil, nil", inner, err)
	}
	if f.Valid {
		t.Errorf("a keepalive has flow %+v, want none", f)
	}
	if len(b.calls) != 1 || b.calls[0].flow.Valid || b.calls[0].info.Peer != a.self || b.calls[0].info.OuterSrc != a.self {
		t.Errorf("Observe calls: %+v; want one, unclassified, from %v on the canonical pair", b.calls, a.self)
	}
	if s := b.stats(); s.KeepalivesReceived != 1 || s.DroppedAuth+s.DroppedMalformed+s.DroppedReplay != 0 {
		t.Errorf("B counted %d keepalives received, drops %+v; want 1 and none", s.KeepalivesReceived, s)
	}
}
