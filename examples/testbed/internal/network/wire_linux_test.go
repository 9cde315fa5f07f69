package network

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestWireForwardsBothWays puts the wire between two namespaces and
// exchanges datagrams across it: a -- va|wa -- wire -- wb|vb -- b.
func TestWireForwardsBothWays(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("needs ethtool to turn offloads off: run scripts/install-deps")
	}
	a, w, b := testutil.NewNetns(t), testutil.NewNetns(t), testutil.NewNetns(t)
	w.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
	testutil.Veth(t, a, "va", w, "wa")
	testutil.Veth(t, w, "wb", b, "vb")
	for _, side := range []struct {
		ns  *testutil.Netns
		dev string
	}{{a, "va"}, {w, "wa"}, {w, "wb"}, {b, "vb"}} {
		side.ns.Run(t, "ethtool", "-K", side.dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
	}
	a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	b.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")

	proc, err := startWire(w.Namespace(), os.Args[0], "wa", "wb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.stop() })

	const datagrams = 200
	echoAcross(t, a, b, netip.MustParseAddrPort("[2001:db8:1::2]:9000"), datagrams, "the wire")

	s, err := proc.stats()
	if err != nil {
		t.Fatal(err)
	}
	// Each datagram crossed once each way; neighbour discovery adds a few
	// frames, and a wire that looped its own output would add thousands.
	for _, dir := range []struct {
		name   string
		frames uint64
		bytes  uint64
	}{{"a to b", s.AToBFrames, s.AToBBytes}, {"b to a", s.BToAFrames, s.BToABytes}} {
		if dir.frames < datagrams || dir.frames > datagrams+20 {
			t.Errorf("%s: %d frames for %d datagrams", dir.name, dir.frames, datagrams)
		}
		if min := uint64(datagrams * (1200 + 8 + 40 + 14)); dir.bytes < min {
			t.Errorf("%s: %d bytes, want at least %d", dir.name, dir.bytes, min)
		}
	}
	if s.Lost() != 0 {
		t.Errorf("the wire lost frames: %+v", s)
	}
	var timed uint64
	for _, c := range s.Delays {
		timed += c
	}
	if timed != s.Frames() {
		t.Errorf("%d frames timed of %d forwarded", timed, s.Frames())
	}

	final, err := proc.stop()
	if err != nil {
		t.Fatal(err)
	}
	if final.Frames() < s.Frames() {
		t.Errorf("final counters %d frames, fewer than the %d seen before", final.Frames(), s.Frames())
	}
}

// dialEcho starts a UDP echo server at server in namespace b and returns
// a client connected to it from namespace a; both close when tb ends.
func dialEcho(tb testing.TB, a, b *testutil.Netns, server netip.AddrPort) *net.UDPConn {
	tb.Helper()
	srv := b.ListenUDP(tb, server)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return a.DialUDP(tb, server)
}

// echoAcross runs a UDP echo server at server in namespace b, sends
// datagrams 1200-byte datagrams to it from namespace a one at a time, and
// fails unless each comes back whole, through what the test put between
// them (named by path in the failures).
func echoAcross(t *testing.T, a, b *testutil.Netns, server netip.AddrPort, datagrams int, path string) {
	t.Helper()
	cli := dialEcho(t, a, b, server)

	payload := make([]byte, 1200)
	buf := make([]byte, 2048)
	for i := range datagrams {
		payload[0] = byte(i)
		if _, err := cli.Write(payload); err != nil {
			t.Fatal(err)
		}
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := cli.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: no echo through %s: %v", i, path, err)
		}
		if n != len(payload) || buf[0] != byte(i) {
			t.Fatalf("datagram %d came back as %d bytes starting %d", i, n, buf[0])
		}
	}
}

// TestWireCountsOversizeFrames sends a frame bigger than the wire's
// buffer (jumbo MTU on one side): the wire must count it, not send it on
// cut short.
func TestWireCountsOversizeFrames(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("needs ethtool to turn offloads off: run scripts/install-deps")
	}
	a, w, b := testutil.NewNetns(t), testutil.NewNetns(t), testutil.NewNetns(t)
	w.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
	testutil.Veth(t, a, "va", w, "wa")
	testutil.Veth(t, w, "wb", b, "vb")
	a.Run(t, "ethtool", "-K", "va", "tx", "off")
	a.Run(t, "ip", "link", "set", "va", "mtu", "9000")
	w.Run(t, "ip", "link", "set", "wa", "mtu", "9000")
	a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	b.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")
	// No neighbour discovery needed: the frame only has to reach the wire.
	a.Run(t, "ip", "neigh", "add", "2001:db8:1::2", "lladdr", "02:00:00:00:00:02", "dev", "va")
	proc, err := startWire(w.Namespace(), os.Args[0], "wa", "wb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.stop() })

	cli := a.DialUDP(t, netip.MustParseAddrPort("[2001:db8:1::2]:9000"))
	if _, err := cli.Write(make([]byte, 6000)); err != nil { // one 6062-byte frame
		t.Fatal(err)
	}
	var s WireStats
	for range 50 { // the frame is on its way: wait for the wire to see it
		if s, err = proc.stats(); err != nil {
			t.Fatal(err)
		}
		if s.Oversize > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Neighbour discovery or MLD frames may cross too, but nothing big.
	if s.Oversize != 1 || s.AToBBytes > s.AToBFrames*1514 {
		t.Errorf("a 6062-byte frame: %d counted oversize, %d frames of %d bytes forwarded; want 1 oversize, nothing big forwarded",
			s.Oversize, s.AToBFrames, s.AToBBytes)
	}
}
