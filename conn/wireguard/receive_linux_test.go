package wireguard

import (
	"net"
	"net/netip"
	"testing"

	wgconn "golang.zx2c4.com/wireguard/conn"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

// loopbackBind opens a Bind on [::1]:40000 in a new namespace with one
// peer, [::1]:40001, and returns its receive function and the sockets of
// the peer and of a stranger, [::1]:40002. acceptUnknown sets the conn's
// option after NewBind (which turns it on).
func loopbackBind(t testing.TB, acceptUnknown bool) (b *Bind, receive wgconn.ReceiveFunc, peer netip.AddrPort, peerConn, strangerConn *net.UDPConn) {
	t.Helper()
	ns := testutil.NewNetns(t)
	peer = netip.MustParseAddrPort("[::1]:40001")
	b = NewBind(conn.Config{Port: 40000, Peers: []conn.Peer{{Addr: peer}}})
	b.cfg.AcceptUnknown = acceptUnknown
	b.listen = func(cfg conn.Config) (c *conn.FlowSpreadConn, err error) {
		err = ns.Do(func() error {
			if c, err = conn.Listen(cfg); err != nil {
				return err
			}
			if peerConn, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(peer)); err != nil {
				return err
			}
			strangerConn, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: 40002})
			return err
		})
		return c, err
	}
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	t.Cleanup(func() { peerConn.Close(); strangerConn.Close() })
	if port != 40000 {
		t.Errorf("Open bound port %d, want 40000", port)
	}
	return b, fns[0], peer, peerConn, strangerConn
}

// TestReceiveKeepsSlots checks that datagrams the conn drops (from a
// stranger, with AcceptUnknown off) leave their slot empty, so each
// datagram wireguard-go reads is in the buffer the conn read it into,
// with its peer's endpoint and its ECN record.
func TestReceiveKeepsSlots(t *testing.T) {
	b, receive, peer, peerConn, strangerConn := loopbackBind(t, false)
	fns := []wgconn.ReceiveFunc{receive}
	to := &net.UDPAddr{IP: net.IPv6loopback, Port: 40000}
	order := []struct {
		from *net.UDPConn
		msg  string
	}{{peerConn, "one"}, {strangerConn, "x"}, {strangerConn, "y"}, {peerConn, "two"}, {strangerConn, "z"}, {peerConn, "three"}}
	for _, d := range order {
		if _, err := d.from.WriteToUDP([]byte(d.msg), to); err != nil {
			t.Fatal(err)
		}
	}

	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, len(bufs))
	eps := make([]wgconn.Endpoint, len(bufs))
	var got []string
	gap := false // a dropped datagram's empty slot before a kept one
	for len(got) < 3 {
		n, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				gap = gap || i < n-1
				continue
			}
			got = append(got, string(bufs[i][:sizes[i]]))
			if e, ok := eps[i].(*Endpoint); !ok || e.AddrPort() != peer {
				t.Errorf("datagram %q reports endpoint %v, want %v", bufs[i][:sizes[i]], eps[i], peer)
			}
			// Not WireGuard transport data: never written to the TUN, so
			// no record.
			if _, n, ok := b.received.take(sendKey(bufs[i])); ok {
				t.Errorf("buffer %d: a record for %d bytes of a datagram that is no transport data", i, n)
			}
		}
	}
	want := []string{"one", "two", "three"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	t.Logf("batch read %v, empty slot seen %v", b.Conn().Stats().BatchRead, gap)
	if s := b.Conn().Stats(); s.BatchRead && !gap {
		t.Errorf("the batch read never left an empty slot for a dropped datagram: the test did not exercise it")
	}
	if s := b.Conn().Stats(); s.DroppedForeign != 3 {
		t.Errorf("conn dropped %d datagrams from the stranger, want 3", s.DroppedForeign)
	}
	// The same endpoint every time: roaming compares nothing new.
	e1, _ := b.ParseEndpoint(peer.String())
	if e1 != eps[0] {
		t.Errorf("ParseEndpoint returned another Endpoint than receive did")
	}
}

// TestReceiveStrangers checks that the Bind, as NewBind makes it, hands
// wireguard-go the datagrams of a source that is no peer's with an
// Endpoint of that source, one per address, so wireguard-go can roam to
// it, while the peer's datagrams keep the peer's canonical Endpoint.
func TestReceiveStrangers(t *testing.T) {
	b, receive, peer, peerConn, strangerConn := loopbackBind(t, true)
	stranger := netip.MustParseAddrPort("[::1]:40002")
	to := &net.UDPAddr{IP: net.IPv6loopback, Port: 40000}
	order := []struct {
		from *net.UDPConn
		msg  string
		want netip.AddrPort
	}{{peerConn, "one", peer}, {strangerConn, "x", stranger}, {peerConn, "two", peer}, {strangerConn, "y", stranger}}
	for _, d := range order {
		if _, err := d.from.WriteToUDP([]byte(d.msg), to); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, len(bufs))
	eps := make([]wgconn.Endpoint, len(bufs))
	got := map[string]wgconn.Endpoint{}
	for len(got) < len(order) {
		n, err := receive(bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if sizes[i] > 0 {
				got[string(bufs[i][:sizes[i]])] = eps[i]
			}
		}
	}
	for _, d := range order {
		e, ok := got[d.msg].(*Endpoint)
		if !ok || e.AddrPort() != d.want {
			t.Errorf("datagram %q reports endpoint %v, want %v", d.msg, got[d.msg], d.want)
		}
	}
	if got["x"] != got["y"] {
		t.Errorf("two datagrams of one stranger report different Endpoints")
	}
	if e, _ := b.ParseEndpoint(peer.String()); e != got["one"] {
		t.Errorf("ParseEndpoint returned another Endpoint than receive did for the peer")
	}
	if s := b.Conn().Stats(); s.ReceivedUnknown != 2 || s.DroppedForeign != 0 {
		t.Errorf("conn received %d datagrams from strangers and dropped %d; want 2 and 0", s.ReceivedUnknown, s.DroppedForeign)
	}
}
