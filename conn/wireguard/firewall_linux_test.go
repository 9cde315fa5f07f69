package wireguard

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// A home router's stateful firewall in front of A, between two
// wireguard-go devices on kernel TUNs:
//
//	A (wa) 2001:db8:1::1 ── (ra) R (rb) ── 2001:db8:2::1 (wb) B
//	prefix 2001:db8:a::/64                  prefix 2001:db8:b::/64
//	inner 10.0.0.1                          inner 10.0.0.2
//
// R forwards between the two links; its nftables firewall follows RFC
// 6092: what A sends out opens state, answers to it pass, ICMPv6 passes,
// and from outside only A's canonical address and port (the one hole a
// user opens for the VPN) is reachable; everything else is dropped and
// counted.
var (
	fwLinkA = netip.MustParseAddrPort("[2001:db8:1::1]:51820")
	fwLinkB = netip.MustParseAddrPort("[2001:db8:2::1]:51821")
)

// fwCounters count the spread traffic through the firewall, each way,
// before it judges it.
var fwCounters = testutil.HomeFirewallRules{
	Decls: "counter spreadIn {}\n\tcounter spreadOut {}",
	First: `ip6 saddr 2001:db8:b::/64 ip6 daddr 2001:db8:a::/64 counter name "spreadIn"
		ip6 saddr 2001:db8:a::/64 ip6 daddr 2001:db8:b::/64 counter name "spreadOut"`,
}

// fwEnd is one wireguard-go device on a kernel TUN.
type fwEnd struct {
	ns   *testutil.Netns
	bind *Bind
	dev  *device.Device
}

// newFirewallTunnel builds the topology above and brings both devices up.
func newFirewallTunnel(t *testing.T) (a, b *fwEnd, r *testutil.Netns) {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("needs the ping command: apt-get install iputils-ping")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for the TUN devices: %v", err)
	}
	nsA, nsR, nsB := testutil.NewNetns(t), testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, nsA, "wa", nsR, "ra")
	testutil.Veth(t, nsR, "rb", nsB, "wb")
	nsR.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	nsA.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "wa", "nodad")
	nsR.Run(t, "ip", "addr", "add", "2001:db8:1::ff/64", "dev", "ra", "nodad")
	nsR.Run(t, "ip", "addr", "add", "2001:db8:2::ff/64", "dev", "rb", "nodad")
	nsB.Run(t, "ip", "addr", "add", "2001:db8:2::1/64", "dev", "wb", "nodad")
	nsA.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::ff")
	nsB.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:2::ff")
	nsR.Run(t, "ip", "-6", "route", "add", prefixA.String(), "via", "2001:db8:1::1")
	nsR.Run(t, "ip", "-6", "route", "add", prefixB.String(), "via", "2001:db8:2::1")
	for _, e := range []struct {
		ns *testutil.Netns
		p  netip.Prefix
	}{{nsA, prefixA}, {nsB, prefixB}} {
		if err := e.ns.Do(func() error { _, err := host.AddLocalRoute(e.p); return err }); err != nil {
			t.Fatalf("local route %v: %v", e.p, err)
		}
	}
	testutil.HomeFirewall(t, nsR, "ra", fwLinkA, fwCounters)

	var key hash.Key
	rand.Read(key[:])
	kA, kB := newKey(t), newKey(t)
	a = newFwEnd(t, nsA, conn.Config{Range: conn.Range{Prefix: prefixA}, Port: fwLinkA.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: fwLinkB, Range: conn.Range{Prefix: prefixB}}}})
	b = newFwEnd(t, nsB, conn.Config{Range: conn.Range{Prefix: prefixB}, Port: fwLinkB.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: fwLinkA, Range: conn.Range{Prefix: prefixA}}}})
	// A keeps the hole's state fresh, as a client behind a firewall does.
	a.configure(t, kA, kB, fwLinkA.Port(), fwLinkB, innerB, innerA, "persistent_keepalive_interval=25\n")
	b.configure(t, kB, kA, fwLinkB.Port(), fwLinkA, innerA, innerB, "")
	return a, b, nsR
}

func newFwEnd(t *testing.T, ns *testutil.Netns, cfg conn.Config) *fwEnd {
	t.Helper()
	e := &fwEnd{ns: ns, bind: NewBind(cfg)}
	e.bind.listen = func(cfg conn.Config) (c *conn.FlowSpreadConn, err error) {
		err = ns.Do(func() error { c, err = conn.Listen(cfg); return err })
		return c, err
	}
	var td tun.Device
	if err := ns.Do(func() (err error) { td, err = tun.CreateTUN("wg0", device.DefaultMTU); return err }); err != nil {
		t.Fatalf("create a TUN in %s: %v", ns.Name, err)
	}
	e.dev = device.NewDevice(WrapTUN(nsTUN{td}, e.bind), e.bind, device.NewLogger(device.LogLevelError, fmt.Sprintf("(%s) ", ns.Name)))
	t.Cleanup(e.dev.Close)
	return e
}

// nsTUN is a kernel TUN made in a namespace: wireguard-go asks its MTU
// with an ioctl on a socket of the calling thread's namespace, which has
// no such device, so it reports the MTU configure gives the link.
type nsTUN struct{ tun.Device }

func (nsTUN) MTU() (int, error) { return device.DefaultMTU, nil }

func (e *fwEnd) configure(t *testing.T, self, peer wgKey, port uint16, peerAddr netip.AddrPort, peerInner, inner netip.Addr, extra string) {
	t.Helper()
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n%s",
		self.private, port, peer.public, peerAddr, peerInner, extra)
	if err := e.dev.IpcSet(cfg); err != nil {
		t.Fatalf("IpcSet: %v", err)
	}
	if err := e.dev.Up(); err != nil {
		t.Fatalf("device up: %v", err)
	}
	e.ns.Run(t, "ip", "addr", "add", inner.String()+"/24", "dev", "wg0")
	e.ns.Run(t, "ip", "link", "set", "wg0", "mtu", fmt.Sprint(device.DefaultMTU), "up")
}

// TestFirewallBothSides opens inner flows from each side through the
// firewall in front of A, with spreading on: five ping runs (five echo
// identifiers, five flows) and a TCP connection from each side must
// complete, and both directions must use spread pairs through the
// firewall. Then B declares A Open, as if A's whole range were
// reachable: B's new flows go straight to their spread pairs, and the
// firewall drops them, which shows that the firewall bites and that
// learning the paths is what carries the flows.
func TestFirewallBothSides(t *testing.T) {
	a, b, r := newFirewallTunnel(t)
	sides := []struct {
		name     string
		from, to *fwEnd
		dst      netip.Addr
	}{{"A to B", a, b, innerB}, {"B to A", b, a, innerA}}
	for _, s := range sides {
		for i := range 5 {
			if out, err := s.from.ns.Output("ping", "-c", "3", "-i", "0.2", "-W", "5", s.dst.String()); err != nil {
				t.Errorf("ping %s, run %d: %v: %s", s.name, i, err, out)
			}
		}
		addr := netip.AddrPortFrom(s.dst, 7000)
		fwEchoServer(t, s.to.ns, addr)
		if err := fwEcho(s.from.ns, addr, 256<<10); err != nil {
			t.Errorf("TCP %s: %v", s.name, err)
		}
		t.Logf("%s: firewall dropped %d so far", s.name, int(testutil.NftCounter(t, r, "dropped")))
	}
	dropped, in, out := int(testutil.NftCounter(t, r, "dropped")), int(testutil.NftCounter(t, r, "spreadIn")), int(testutil.NftCounter(t, r, "spreadOut"))
	ca, cb := a.bind.Conn().Stats(), b.bind.Conn().Stats()
	t.Logf("firewall: %d datagrams dropped; spread pairs forwarded %d to A, %d from A", dropped, in, out)
	t.Logf("A: sent waiting %d, probes %d, paths opened %d; bind %+v", ca.SentWaiting, ca.SentProbes, ca.PathsOpened, a.bind.Stats())
	t.Logf("B: sent waiting %d, probes %d, paths opened %d; bind %+v", cb.SentWaiting, cb.SentProbes, cb.PathsOpened, b.bind.Stats())
	if in == 0 || out == 0 || ca.PathsOpened == 0 || cb.PathsOpened == 0 {
		t.Errorf("spreading did not happen: %d spread datagrams to A and %d from A; paths opened A %d, B %d", in, out, ca.PathsOpened, cb.PathsOpened)
	}
	// Learning lets nothing through that the firewall would drop but B's
	// probe copies for the flows B opened (at most one a second each).
	if dropped > int(cb.SentProbes) {
		t.Errorf("the firewall dropped %d datagrams, more than B's %d probe copies", dropped, cb.SentProbes)
	}

	if err := b.bind.SetPeer(conn.Peer{Addr: fwLinkA, Range: conn.Range{Prefix: prefixA}, Open: true}); err != nil {
		t.Fatal(err)
	}
	out2, err := b.ns.Output("ping", "-c", "2", "-i", "0.2", "-W", "1", innerA.String())
	after := int(testutil.NftCounter(t, r, "dropped"))
	t.Logf("with A declared Open at B: ping B to A: %v; firewall dropped %d more", err, after-dropped)
	if err == nil {
		t.Errorf("ping from B to A passed the firewall with A declared Open at B: the firewall does not bite: %s", out2)
	}
	if after <= dropped {
		t.Errorf("the firewall dropped nothing of B's flows to A's unopened pairs")
	}
}

// fwEchoServer echoes every TCP connection to addr inside ns until the
// test ends.
func fwEchoServer(t *testing.T, ns *testutil.Netns, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
}

// fwEcho sends n random bytes to the echo server at addr from inside ns
// and checks that they come back unchanged.
func fwEcho(ns *testutil.Netns, addr netip.AddrPort, n int) error {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second); return err }); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read the echo: %w (got %d of %d bytes)", err, len(got), n)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo differs: got %d bytes, sent %d", len(got), n)
	}
	return nil
}
