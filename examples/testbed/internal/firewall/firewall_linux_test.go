package firewall

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestFirewallDropsUnsolicited builds a protected host behind the
// firewall and an outside host on its link:
//
//	home (firewall on c0) --c0|x0-- outside
//
// Unsolicited datagrams from outside are dropped and counted, except to
// the VPN's port; a datagram the home host sends out gets its reply back.
func TestFirewallDropsUnsolicited(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft: run scripts/install-deps")
	}
	home, outside := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, home, "c0", outside, "x0")
	homeAddr, outAddr := netip.MustParseAddr("2001:db8:f::1"), netip.MustParseAddr("2001:db8:f::2")
	home.Run(t, "ip", "addr", "add", homeAddr.String()+"/64", "dev", "c0", "nodad")
	outside.Run(t, "ip", "addr", "add", outAddr.String()+"/64", "dev", "x0", "nodad")
	if err := Install(home.Namespace(), Protect{Outside: "c0", Host: homeAddr, VPNPort: 51820}); err != nil {
		t.Fatal(err)
	}
	if err := CountPairs(home.Namespace(), "c0", homeAddr, 51820); err != nil {
		t.Fatal(err)
	}
	// Neighbour discovery must pass, or nothing below would.
	outside.Run(t, "ping", "-6", "-c", "1", "-w", "5", homeAddr.String())

	closed := home.ListenUDP(t, netip.AddrPortFrom(homeAddr, 4000))
	vpn := home.ListenUDP(t, netip.AddrPortFrom(homeAddr, 51820))
	before := dropped(t, home)

	// Unsolicited, to a closed port: dropped and counted.
	send(t, outside, netip.AddrPortFrom(homeAddr, 4000), 3)
	if err := receive(closed, time.Second); !errors.Is(err, errTimeout) {
		t.Errorf("an unsolicited datagram to port 4000 reached the host (%v)", err)
	}
	if got := dropped(t, home) - before; got != 3 {
		t.Errorf("the drop counter rose by %d, want 3", got)
	}

	// Unsolicited, to the VPN's port: let in.
	send(t, outside, netip.AddrPortFrom(homeAddr, 51820), 1)
	if err := receive(vpn, 5*time.Second); err != nil {
		t.Errorf("a datagram to the VPN's port did not arrive: %v", err)
	}

	// Out and back: the home host sends from port 4001 (closed to the
	// outside), the outside host answers, and conntrack lets the reply in.
	echo := outside.ListenUDP(t, netip.AddrPortFrom(outAddr, 5000))
	go func() {
		buf := make([]byte, 100)
		n, from, err := echo.ReadFromUDPAddrPort(buf)
		if err == nil {
			echo.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	var c *net.UDPConn
	if err := home.Do(func() (err error) {
		c, err = net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(homeAddr, 4001)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(outAddr, 5000)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("out")); err != nil {
		t.Fatal(err)
	}
	if err := receive(c, 5*time.Second); err != nil {
		t.Errorf("the reply to a datagram sent out did not come back: %v", err)
	}

	// The accounting table saw the VPN port's one inbound pair, and
	// nothing sent to the VPN port from here.
	out, in, err := Pairs(home.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	if out != 0 || in != 0 {
		// sport 51820 inbound: none above came from port 51820.
		t.Errorf("pairs out %d, in %d; want 0 and 0", out, in)
	}
	timeouts, err := ConntrackTimeouts(home.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	if timeouts.Unreplied <= 0 || timeouts.Stream < timeouts.Unreplied {
		t.Errorf("conntrack timeouts %+v", timeouts)
	}
}

// TestPairsCounted sends from the VPN's port to two addresses of the
// outside host and gets one reply from each: two pairs each way.
func TestPairsCounted(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft: run scripts/install-deps")
	}
	home, outside := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, home, "c0", outside, "x0")
	homeAddr := netip.MustParseAddr("2001:db8:f::1")
	home.Run(t, "ip", "addr", "add", homeAddr.String()+"/64", "dev", "c0", "nodad")
	outAddrs := []netip.Addr{netip.MustParseAddr("2001:db8:f::2"), netip.MustParseAddr("2001:db8:f::3")}
	for _, a := range outAddrs {
		outside.Run(t, "ip", "addr", "add", a.String()+"/64", "dev", "x0", "nodad")
	}
	if err := CountPairs(home.Namespace(), "c0", homeAddr, 51820); err != nil {
		t.Fatal(err)
	}
	c := home.ListenUDP(t, netip.AddrPortFrom(homeAddr, 51820))
	for _, a := range outAddrs {
		peer := outside.ListenUDP(t, netip.AddrPortFrom(a, 51820))
		if _, err := c.WriteToUDPAddrPort([]byte("x"), netip.AddrPortFrom(a, 51820)); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 10)
		_, from, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		peer.WriteToUDPAddrPort([]byte("y"), from)
		if err := receive(c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	out, in, err := Pairs(home.Namespace())
	if err != nil || out != 2 || in != 2 {
		t.Errorf("pairs out %d, in %d (%v); want 2 and 2", out, in, err)
	}
	if err := ResetPairs(home.Namespace()); err != nil {
		t.Fatal(err)
	}
	if out, in, _ := Pairs(home.Namespace()); out != 0 || in != 0 {
		t.Errorf("after the reset: pairs out %d, in %d", out, in)
	}
}

var errTimeout = errors.New("nothing arrived")

func receive(c *net.UDPConn, within time.Duration) error {
	c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 100)
	_, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errTimeout
	}
	return err
}

func send(t *testing.T, from *testutil.Netns, to netip.AddrPort, n int) {
	t.Helper()
	c := from.DialUDP(t, to)
	for range n {
		if _, err := c.Write([]byte("unsolicited")); err != nil {
			t.Fatal(err)
		}
	}
}

func dropped(t *testing.T, ns *testutil.Netns) uint64 {
	t.Helper()
	n, err := Dropped(ns.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
