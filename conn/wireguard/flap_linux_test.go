package wireguard

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// newRawTunnel builds the tunnel of newTunnel, but B receives with the Raw
// backend on wb (its prefix is not local: only the listener sees it),
// so the tests can take wb down and re-create it under B's running
// device. It returns a function that makes the veth, addresses and routes
// again after the veth was deleted.
func newRawTunnel(t *testing.T) (a, b *end, relink func()) {
	t.Helper()
	nsA, nsB := testutil.NewNetns(t), testutil.NewNetns(t)
	relink = func() {
		t.Helper()
		testutil.Veth(t, nsA, "wa", nsB, "wb")
		readdress(t, nsA, nsB)
	}
	relink()
	if err := nsA.Do(func() error { _, err := host.AddLocalRoute(prefixA); return err }); err != nil {
		t.Fatalf("local route %v: %v", prefixA, err)
	}
	var key hash.Key
	rand.Read(key[:])
	kA, kB := newKey(t), newKey(t)
	a = newEnd(t, nsA, conn.Config{Range: conn.Range{Prefix: prefixA}, Port: linkA.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}}}}, nil)
	b = newEnd(t, nsB, conn.Config{Range: conn.Range{Prefix: prefixB}, Port: linkB.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}}}, Receive: conn.Raw{Interface: "wb"}}, nil)
	a.configure(t, kA, kB, linkA.Port(), linkB, innerB)
	b.configure(t, kB, kA, linkB.Port(), linkA, innerA)
	return a, b, relink
}

// readdress puts the link addresses and the routes to the prefixes on the
// veth, whether they are there or were flushed.
func readdress(t *testing.T, nsA, nsB *testutil.Netns) {
	t.Helper()
	nsA.Run(t, "ip", "addr", "replace", linkA.Addr().String()+"/64", "dev", "wa", "nodad")
	nsB.Run(t, "ip", "addr", "replace", linkB.Addr().String()+"/64", "dev", "wb", "nodad")
	nsA.Run(t, "ip", "-6", "route", "replace", prefixB.String(), "via", linkB.Addr().String())
	nsB.Run(t, "ip", "-6", "route", "replace", prefixA.String(), "via", linkA.Addr().String())
	// Static neighbor entries: the devices keep sending while the link
	// is being rebuilt, and a neighbor solicitation that beats the
	// kernel's joining the new address's multicast group goes unanswered
	// and is retried only a second later (RFC 4861's RetransTimer),
	// which would time the test's setup, not the receive path.
	nsA.Run(t, "ip", "-6", "neigh", "replace", linkB.Addr().String(), "lladdr", macOf(t, nsB, "wb"), "dev", "wa", "nud", "permanent")
	nsB.Run(t, "ip", "-6", "neigh", "replace", linkA.Addr().String(), "lladdr", macOf(t, nsA, "wa"), "dev", "wb", "nud", "permanent")
}

// macOf returns the MAC address of interface ifname in ns.
func macOf(t *testing.T, ns *testutil.Netns, ifname string) string {
	t.Helper()
	var mac string
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// tunnelWorks sends inner packets from one end every 20 ms until one
// comes out of the other end's TUN, and fails t unless that happens
// within the given time. It returns how long it took.
func tunnelWorks(t *testing.T, from, to *end, src, dst netip.Addr, within time.Duration, tag string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for k := 0; ; k++ {
		from.send(innerUDP(src, dst, 40000, 9000, flowaddr.NotECT, fmt.Sprintf("%s #%d", tag, k)))
		for wait := true; wait; {
			select {
			case p := <-to.tun.Inbound:
				if bytes.Contains(p, []byte(tag+" #")) {
					return time.Since(start)
				}
			case <-tick.C:
				wait = false
			case <-deadline.C:
				s := to.bind.Conn().Stats()
				t.Fatalf("%s: nothing came through the tunnel within %v (receiver: received %d, link down %d, rebound %d)",
					tag, within, s.Received, s.RecvLinkDown, s.RecvRebound)
			}
		}
	}
}

// TestTunnelSurvivesLinkFlap takes B's interface down and up, then
// deletes and re-creates it, under B's running wireguard-go device on the
// Raw backend: the tunnel must carry packets both ways again within a
// second each time, which it cannot if wireguard-go's receive goroutine
// stopped on an error.
func TestTunnelSurvivesLinkFlap(t *testing.T) {
	a, b, relink := newRawTunnel(t)
	works := func(when string, within time.Duration) {
		t.Helper()
		ab := tunnelWorks(t, a, b, innerA, innerB, within, when+", A to B")
		ba := tunnelWorks(t, b, a, innerB, innerA, within, when+", B to A")
		t.Logf("%s: A to B after %v, B to A after %v", when, ab.Round(time.Millisecond), ba.Round(time.Millisecond))
	}
	// The first packets wait for the handshake; not what is measured.
	works("before", 10*time.Second)
	if s := b.bind.Conn().Stats(); s.Received == 0 {
		t.Fatal("B received nothing through its conn: the test needs B's Raw backend in the path")
	}

	b.ns.Run(t, "ip", "link", "set", "wb", "down")
	time.Sleep(200 * time.Millisecond) // B's reader sees ENETDOWN meanwhile
	b.ns.Run(t, "ip", "link", "set", "wb", "up")
	readdress(t, a.ns, b.ns) // link down flushed wb's address
	works("after down and up", time.Second)
	if s := b.bind.Conn().Stats(); s.RecvLinkDown == 0 {
		t.Errorf("after a flap: B's RecvLinkDown = 0, want it counted")
	}

	b.ns.Run(t, "ip", "link", "del", "wb")
	time.Sleep(200 * time.Millisecond)
	relink()
	works("after re-creation", time.Second)
	// The first packets back may come on the canonical pair, which B's
	// UDP socket reads, before the Raw backend's next look at the
	// interface (every 50 ms) binds to the new device: wait for that.
	for deadline := time.Now().Add(time.Second); b.bind.Conn().Stats().RecvRebound == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after re-creation: B's RecvRebound = 0 a second later, want the rebind counted")
		}
	}
}
