package conn

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// rawTopology is two namespaces joined by a veth pair: the peer side a
// (interface va, 2001:db8:1::1) routes testPrefix through b (vb,
// 2001:db8:1::2), where the raw receiver listens. b has no route for the
// prefix, so only the raw receiver sees those packets.
type rawTopology struct {
	a, b   *testutil.Netns
	vbMAC  net.HardwareAddr
	vaIdx  int
	aAddr  netip.Addr
	prefix netip.Prefix
}

func newRawTopology(t testing.TB) *rawTopology {
	t.Helper()
	topo := &rawTopology{
		a: testutil.NewNetns(t), b: testutil.NewNetns(t),
		aAddr:  netip.MustParseAddr("2001:db8:1::1"),
		prefix: netip.MustParsePrefix("2001:db8:b::/64"),
	}
	testutil.Veth(t, topo.a, "va", topo.b, "vb")
	topo.a.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	topo.b.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")
	topo.a.Run(t, "ip", "-6", "route", "add", topo.prefix.String(), "via", "2001:db8:1::2", "dev", "va")
	if err := topo.b.Do(func() error {
		ifi, err := net.InterfaceByName("vb")
		topo.vbMAC = ifi.HardwareAddr
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := topo.a.Do(func() error {
		ifi, err := net.InterfaceByName("va")
		topo.vaIdx = ifi.Index
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return topo
}

// receiver opens the raw receiver on vb for the prefix and testPort.
func (topo *rawTopology) receiver(t testing.TB) *rawReceiver {
	t.Helper()
	var r receiver
	if err := topo.b.Do(func() (err error) {
		r, err = newRawReceiver("vb", topo.prefix, testPort)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.close() })
	return r.(*rawReceiver)
}

// injector opens an AF_PACKET socket on va that sends hand-made packets
// (from the network header on) to vb's MAC address.
func (topo *rawTopology) injector(t testing.TB) func(pkt []byte, v4 bool) {
	t.Helper()
	var fd int
	if err := topo.a.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	sa := &unix.SockaddrLinklayer{Ifindex: topo.vaIdx, Halen: 6}
	copy(sa.Addr[:], topo.vbMAC)
	return func(pkt []byte, v4 bool) {
		t.Helper()
		sa.Protocol = htons(unix.ETH_P_IPV6)
		if v4 {
			sa.Protocol = htons(unix.ETH_P_IP)
		}
		if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRawReceiverGetsOnlyMatchingDatagrams(t *testing.T) {
	topo := newRawTopology(t)
	r := topo.receiver(t)
	inject := topo.injector(t)

	with := func(f func(*packetSpec)) packetSpec { s := goodSpec(); f(&s); return s }
	type sent struct {
		spec packetSpec
		keep bool
	}
	var all []sent
	for i, tt := range []struct {
		spec packetSpec
		keep bool
	}{
		{with(func(s *packetSpec) { s.dport = testPort + 1 }), false},
		{with(func(s *packetSpec) { s.dst = outPrefix }), false},
		{with(func(s *packetSpec) { s.tcp = true }), false},
		{packetSpec{v4: true, src: netip.MustParseAddr("192.0.2.1"), dst: netip.MustParseAddr("192.0.2.2"), sport: 4000, dport: testPort, payload: []byte("v4")}, false},
		{with(func(s *packetSpec) { s.hopByHop = true }), false},
		{with(func(s *packetSpec) { s.badSum = true }), false},
		{with(func(s *packetSpec) { s.zeroSum = true }), false},
		{with(func(s *packetSpec) { s.udpLenDiff = 30 }), false},
		{with(func(s *packetSpec) { s.dst = netip.MustParseAddr("2001:db8:b::1"); s.tclass = 0x01 }), true},
		{with(func(s *packetSpec) { s.dst = netip.MustParseAddr("2001:db8:b::2"); s.tclass = 0x03; s.sport = 4001 }), true},
		{with(func(s *packetSpec) {
			s.dst = netip.MustParseAddr("2001:db8:b::3")
			s.tclass = 0x00
			s.payload = make([]byte, 1200)
		}), true},
	} {
		tt.spec.payload = append([]byte{byte(i)}, tt.spec.payload...)
		all = append(all, sent{tt.spec, tt.keep})
	}
	// Everything goes out in order over one veth, so once the last (kept)
	// packet is read, every refused one before it has been seen and refused.
	var want []packetSpec
	for _, s := range all {
		inject(s.spec.build(t), s.spec.v4)
		if s.keep {
			want = append(want, s.spec)
		}
	}
	var got []Message
	readN(t, r, makeMsgs(8, 1500), len(want), func(m Message) {
		m.Buf = bytes.Clone(m.Buf[:m.N])
		got = append(got, m)
	})
	for i, m := range got {
		w := want[i]
		if !bytes.Equal(m.Buf, w.payload) {
			t.Errorf("datagram %d: payload % x..., want % x...", i, m.Buf[:1], w.payload[:1])
		}
		if wantSrc := netip.AddrPortFrom(w.src, w.sport); m.OuterSrc != wantSrc {
			t.Errorf("datagram %d: OuterSrc %v, want %v", i, m.OuterSrc, wantSrc)
		}
		if wantDst := netip.AddrPortFrom(w.dst, testPort); m.OuterDst != wantDst {
			t.Errorf("datagram %d: OuterDst %v, want %v", i, m.OuterDst, wantDst)
		}
		if m.ECN != flowaddr.ECN(w.tclass&3) {
			t.Errorf("datagram %d: ECN %d, want %d", i, m.ECN, w.tclass&3)
		}
	}
	if d := r.drops(); d.BadChecksum != 2 || d.Truncated != 1 {
		t.Errorf("drops %+v, want 2 bad checksums (one wrong, one zero) and 1 truncated", d)
	}
	// Nothing else is queued: the refused packets never reached the socket.
	r.setReadDeadline(time.Now())
	if n, err := r.readBatch(makeMsgs(8, 1500)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("extra read = %d, %v; want nothing left", n, err)
	}
}

// TestRawReceiverFromKernelStack reads datagrams that a's own UDP stack
// sent: over a veth they carry a checksum the device would finish
// (CHECKSUM_PARTIAL), which the receiver must not count as bad.
func TestRawReceiverFromKernelStack(t *testing.T) {
	topo := newRawTopology(t)
	r := topo.receiver(t)
	dst := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::77"), testPort)
	send := dialUDP(t, topo.a, netip.AddrPortFrom(topo.aAddr, 0), dst)
	setTrafficClass(t, send, true, 0x02)
	payload := bytes.Repeat([]byte("x"), 1000)
	for range 3 {
		if _, err := send.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	readN(t, r, makeMsgs(4, 1500), 3, func(m Message) {
		if !bytes.Equal(m.Buf[:m.N], payload) {
			t.Errorf("payload of %d bytes differs from the %d sent", m.N, len(payload))
		}
		if m.OuterSrc != localAddrPort(send) || m.OuterDst != dst || m.ECN != 2 {
			t.Errorf("got %v -> %v ECN %d, want %v -> %v ECN 2", m.OuterSrc, m.OuterDst, m.ECN, localAddrPort(send), dst)
		}
	})
	if d := r.drops(); d != (recvDrops{}) {
		t.Errorf("drops %+v, want none", d)
	}
}

func TestRawReceiverDeadlineAndClose(t *testing.T) {
	topo := newRawTopology(t)
	r := topo.receiver(t)
	if err := r.setReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := r.readBatch(makeMsgs(2, 1500))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("readBatch = %d, %v; want a deadline error", n, err)
	}
	if err := r.setReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.readBatch(makeMsgs(2, 1500))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond) // let it block; not an assertion
	if err := r.close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked readBatch returned %v after close, want net.ErrClosed", err)
	}
	if _, err := r.readBatch(makeMsgs(1, 1500)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("readBatch after close: %v, want net.ErrClosed", err)
	}
	if err := r.close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestRawReceiverErrors(t *testing.T) {
	ns := testutil.NewNetns(t)
	for _, tt := range []struct {
		name   string
		ifname string
		prefix netip.Prefix
		port   uint16
	}{
		{"no-such-interface", "nosuch0", netip.MustParsePrefix("2001:db8:b::/64"), testPort},
		{"ipv4-prefix", "lo", netip.MustParsePrefix("192.0.2.0/24"), testPort},
		{"port-0", "lo", netip.MustParsePrefix("2001:db8:b::/64"), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := ns.Do(func() error {
				r, err := newRawReceiver(tt.ifname, tt.prefix, tt.port)
				if err == nil {
					r.close()
				}
				return err
			})
			if err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestRawReadBatchDoesNotAllocate(t *testing.T) {
	topo := newRawTopology(t)
	r := topo.receiver(t)
	send := dialUDP(t, topo.a, netip.AddrPortFrom(topo.aAddr, 0), netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::9"), testPort))
	checkReadBatchDoesNotAllocate(t, send, r)
}
