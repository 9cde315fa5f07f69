package conn

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

// frameSpec is a hostile (or, for the control rows, ordinary) Ethernet
// frame carrying one IPv6 UDP datagram to testPort, built with gopacket.
type frameSpec struct {
	name     string
	dstMAC   net.HardwareAddr // nil: the receiving interface's own MAC
	vlan     int              // >= 0: an 802.1Q tag with this VLAN ID; -1: none
	src, dst netip.Addr
	sport    uint16
}

var (
	otherHostMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC  = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1} // ff02::1's group
)

// build serializes the frame with payload, from the Ethernet header on.
func (f frameSpec) build(t testing.TB, srcMAC, ourMAC net.HardwareAddr, payload []byte) []byte {
	t.Helper()
	dstMAC := f.dstMAC
	if dstMAC == nil {
		dstMAC = ourMAC
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
		SrcIP: net.IP(f.src.AsSlice()), DstIP: net.IP(f.dst.AsSlice())}
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: testPort}
	udp.SetNetworkLayerForChecksum(ip)
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ls := []gopacket.SerializableLayer{eth}
	if f.vlan >= 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(f.vlan), Type: layers.EthernetTypeIPv6})
	}
	ls = append(ls, ip, udp, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// frameInjector opens an AF_PACKET SOCK_RAW socket on topo's va that
// sends whole Ethernet frames to vb, so b's kernel processes each as if
// it came off a wire.
func (topo *rawTopology) frameInjector(t testing.TB) func(frame []byte) {
	t.Helper()
	var fd int
	if err := topo.a.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	sa := &unix.SockaddrLinklayer{Ifindex: topo.vaIdx}
	return func(frame []byte) {
		t.Helper()
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			t.Fatal(err)
		}
	}
}

// vaMAC returns the hardware address of topo's va.
func (topo *rawTopology) vaMAC(t testing.TB) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := topo.a.Do(func() error {
		ifi, err := net.InterfaceByName("va")
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// deliveredRows injects one frame per row into topo's b, then a control
// datagram that ends the run, and returns which rows c delivered. Frames
// cross one veth in order, so once the end marker is read every earlier
// frame has been delivered or dropped.
func deliveredRows(t *testing.T, topo *rawTopology, c *FlowSpreadConn, rows []frameSpec) map[string]netip.AddrPort {
	t.Helper()
	inject := topo.frameInjector(t)
	srcMAC, dstMAC := topo.vaMAC(t), topo.vbMAC
	for _, row := range rows {
		inject(row.build(t, srcMAC, dstMAC, []byte(row.name)))
	}
	end := frameSpec{name: "end", vlan: -1, src: topo.aAddr, dst: inPrefix, sport: 4000}
	inject(end.build(t, srcMAC, dstMAC, []byte(end.name)))

	got := map[string]netip.AddrPort{}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, info, err := c.ReadMsg(buf)
		if err != nil {
			t.Fatalf("read: %v (delivered so far: %v)", err, got)
		}
		name := string(buf[:n])
		if name == "end" {
			break
		}
		got[name] = info.Peer
	}
	// Nothing may follow the end marker either.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _, err := c.ReadMsg(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after the end marker: %q, %v", buf[:n], err)
	}
	return got
}

// sanityRow is a frame of the table and the verdict both backends must
// give it. byConn says the conn refuses it although the kernel delivers
// it to the AnyIP socket (Linux 6.18 delivers IPv6 packets from
// ::ffff:127.0.0.1 and from ::); the other refusals are the kernel's
// (ip6_rcv_core, __netif_receive_skb_core), which the Raw backend must
// repeat. Link-local sources to a global address, link-layer broadcast
// and multicast frames (drop_unicast_in_l2_multicast is off by default)
// and priority-tagged frames (VLAN 0) the kernel does deliver.
type sanityRow struct {
	frame  frameSpec
	want   bool
	byConn bool
}

func sanityRows() []sanityRow {
	peer := netip.MustParseAddr("2001:db8:1::1")
	row := func(name string, f func(*frameSpec)) frameSpec {
		s := frameSpec{name: name, vlan: -1, src: peer, dst: inPrefix, sport: 4000}
		f(&s)
		return s
	}
	return []sanityRow{
		{row("control", func(*frameSpec) {}), true, false},
		{row("v4-mapped-loopback-source", func(s *frameSpec) { s.src, s.sport = netip.MustParseAddr("::ffff:127.0.0.1"), 53 }), false, true},
		{row("v4-mapped-source", func(s *frameSpec) { s.src = netip.MustParseAddr("::ffff:192.0.2.1") }), false, true},
		{row("unspecified-source", func(s *frameSpec) { s.src = netip.IPv6Unspecified() }), false, true},
		{row("multicast-destination", func(s *frameSpec) { s.dst, s.dstMAC = netip.MustParseAddr("ff02::1"), allNodesMAC }), false, true},
		{row("loopback-source", func(s *frameSpec) { s.src = netip.IPv6Loopback() }), false, false},
		{row("multicast-source", func(s *frameSpec) { s.src = netip.MustParseAddr("ff02::1") }), false, false},
		{row("global-multicast-source", func(s *frameSpec) { s.src = netip.MustParseAddr("ff0e::1") }), false, false},
		{row("link-local-source", func(s *frameSpec) { s.src = netip.MustParseAddr("fe80::1") }), true, false},
		{row("other-host-mac", func(s *frameSpec) { s.dstMAC = otherHostMAC }), false, false},
		{row("broadcast-mac", func(s *frameSpec) { s.dstMAC = broadcastMAC }), true, false},
		{row("multicast-mac", func(s *frameSpec) { s.dstMAC = allNodesMAC }), true, false},
		{row("vlan-100-not-configured", func(s *frameSpec) { s.vlan = 100 }), false, false},
		{row("vlan-0-priority-tag", func(s *frameSpec) { s.vlan = 0 }), true, false},
		{row("control-again", func(s *frameSpec) { s.src = netip.MustParseAddr("2001:db8:1::3") }), true, false},
	}
}

// TestRawDeliversWhatAnyIPDelivers injects the same hostile frames into a
// host receiving with the AnyIP backend and into one receiving with the
// Raw backend, both with AcceptUnknown as conn/wireguard sets it, and
// requires the same verdict for every frame, and the one in the table.
func TestRawDeliversWhatAnyIPDelivers(t *testing.T) {
	rows := sanityRows()
	frames := make([]frameSpec, len(rows))
	for i, r := range rows {
		frames[i] = r.frame
	}
	cfg := Config{Range: Range{Prefix: testPrefix}, Port: testPort, AcceptUnknown: true}

	anyTopo := newRawTopology(t)
	anyTopo.b.Run(t, "ip", "-6", "route", "add", "local", testPrefix.String(), "dev", "lo")
	var anyConn *FlowSpreadConn
	if err := anyTopo.b.Do(func() (err error) { anyConn, err = Listen(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	defer anyConn.Close()
	kernel := deliveredRows(t, anyTopo, anyConn, frames)

	rawTopo := newRawTopology(t)
	cfg.Receive = Raw{Interface: "vb"}
	var rawConn *FlowSpreadConn
	if err := rawTopo.b.Do(func() (err error) { rawConn, err = Listen(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	defer rawConn.Close()
	raw := deliveredRows(t, rawTopo, rawConn, frames)

	var wantAnyBad, wantRawBad uint64
	for _, r := range rows {
		name := r.frame.name
		kPeer, kOK := kernel[name]
		rPeer, rOK := raw[name]
		if kOK != r.want {
			t.Errorf("%s: AnyIP delivered=%v (peer %v), want %v", name, kOK, kPeer, r.want)
		}
		if rOK != r.want {
			t.Errorf("%s: Raw delivered=%v (peer %v), want %v", name, rOK, rPeer, r.want)
		}
		if rOK && kOK && rPeer != kPeer {
			t.Errorf("%s: Raw reports peer %v, AnyIP %v", name, rPeer, kPeer)
		}
		if r.byConn {
			wantAnyBad++
		}
		if !r.want {
			// By the Raw receiver, or (for the multicast destination,
			// which the Raw filter does not let through) by the conn,
			// which reads it from its UDP socket.
			wantRawBad++
		}
	}
	if got := anyConn.Stats().RecvBadSource; got != wantAnyBad {
		t.Errorf("AnyIP: RecvBadSource %d, want %d", got, wantAnyBad)
	}
	if got := rawConn.Stats().RecvBadSource; got != wantRawBad {
		t.Errorf("Raw: RecvBadSource %d, want %d", got, wantRawBad)
	}
}

// TestRawVLANOnlyOnItsInterface checks that a frame tagged for a VLAN the
// host has an interface for is read by a Raw receiver on that VLAN
// interface and not by one on its parent, which the kernel also shows
// the frame to.
func TestRawVLANOnlyOnItsInterface(t *testing.T) {
	topo := newRawTopology(t)
	if _, err := topo.b.Output("ip", "link", "add", "link", "vb", "name", "vb.100", "type", "vlan", "id", "100"); err != nil {
		t.Skipf("no VLAN interfaces in this kernel (8021q): %v", err)
	}
	topo.b.Run(t, "ip", "link", "set", "vb.100", "up")
	open := func(ifname string) *rawReceiver {
		var r receiver
		if err := topo.b.Do(func() (err error) { r, err = newRawReceiver(ifname, topo.prefix, testPort); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.close() })
		return r.(*rawReceiver)
	}
	parent, vlan := open("vb"), open("vb.100")

	inject := topo.frameInjector(t)
	srcMAC := topo.vaMAC(t)
	for _, f := range []frameSpec{
		{name: "tagged", vlan: 100, src: topo.aAddr, dst: inPrefix, sport: 4000},
		{name: "plain", vlan: -1, src: topo.aAddr, dst: inPrefix, sport: 4000},
	} {
		inject(f.build(t, srcMAC, topo.vbMAC, []byte(f.name)))
	}
	for _, tt := range []struct {
		r    *rawReceiver
		want string
	}{{parent, "plain"}, {vlan, "tagged"}} {
		msgs := makeMsgs(4, 1500)
		readN(t, tt.r, msgs, 1, func(m Message) {
			if got := string(m.Buf[:m.N]); got != tt.want {
				t.Errorf("receiver %d read %q, want %q", tt.r.ifindex.Load(), got, tt.want)
			}
		})
		tt.r.setReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := tt.r.readBatch(msgs); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("receiver %d read %d more (%v), want only %q", tt.r.ifindex.Load(), n, err, tt.want)
		}
	}
	if got := parent.drops().BadSource; got != 1 {
		t.Errorf("the parent's receiver counted %d bad sources, want 1 (the tagged frame)", got)
	}
}

// TestRawHonoursDropUnicastInL2Multicast checks that with the interface's
// drop_unicast_in_l2_multicast sysctl set, both backends refuse unicast
// datagrams in link-layer broadcast and multicast frames, as the kernel
// then does.
func TestRawHonoursDropUnicastInL2Multicast(t *testing.T) {
	rows := []frameSpec{
		{name: "broadcast-mac", dstMAC: broadcastMAC, vlan: -1, src: peerAddr, dst: inPrefix, sport: 4000},
		{name: "multicast-mac", dstMAC: allNodesMAC, vlan: -1, src: peerAddr, dst: inPrefix, sport: 4000},
		{name: "control", vlan: -1, src: peerAddr, dst: inPrefix, sport: 4000},
	}
	for _, recv := range []Receive{AnyIP{}, Raw{Interface: "vb"}} {
		topo := newRawTopology(t)
		topo.b.Run(t, "sysctl", "-qw", "net.ipv6.conf.vb.drop_unicast_in_l2_multicast=1")
		if _, ok := recv.(AnyIP); ok {
			topo.b.Run(t, "ip", "-6", "route", "add", "local", testPrefix.String(), "dev", "lo")
		}
		var c *FlowSpreadConn
		cfg := Config{Range: Range{Prefix: testPrefix}, Port: testPort, AcceptUnknown: true, Receive: recv}
		if err := topo.b.Do(func() (err error) { c, err = Listen(cfg); return err }); err != nil {
			t.Fatal(err)
		}
		got := deliveredRows(t, topo, c, rows)
		c.Close()
		if len(got) != 1 {
			t.Errorf("%T delivered %v, want only the control", recv, got)
		}
	}
}

// TestRawReadsSysctlOfDottedInterface checks that the Raw backend finds
// drop_unicast_in_l2_multicast of an interface whose name has a dot, as
// VLANs' names do (eth0.100): the dotted sysctl name would split it.
func TestRawReadsSysctlOfDottedInterface(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "v0.1", "type", "veth", "peer", "name", "v1")
	ns.Run(t, "ip", "link", "set", "v0.1", "up")
	ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/v0.1/drop_unicast_in_l2_multicast")
	var r receiver
	if err := ns.Do(func() (err error) { r, err = newRawReceiver("v0.1", testPrefix, testPort); return err }); err != nil {
		t.Fatal(err)
	}
	defer r.close()
	if r.(*rawReceiver).l2Multicast {
		t.Error("the receiver accepts unicast in link-layer multicast frames, though the interface's sysctl says to drop them")
	}
}
