package wireguard

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// Two wireguard-go devices, A and B, in two namespaces joined by a veth:
//
//	A (wa) 2001:db8:ff::1 ──── 2001:db8:ff::2 (wb) B
//	prefix 2001:db8:a::/64      prefix 2001:db8:b::/64
//	inner 10.0.0.1              inner 10.0.0.2
//
// Each prefix has a local route on its host and a route through the veth
// on the other; each end's canonical address is its veth address.
var (
	prefixA = netip.MustParsePrefix("2001:db8:a::/64")
	prefixB = netip.MustParsePrefix("2001:db8:b::/64")
	linkA   = netip.MustParseAddrPort("[2001:db8:ff::1]:51820")
	linkB   = netip.MustParseAddrPort("[2001:db8:ff::2]:51821")
	innerA  = netip.MustParseAddr("10.0.0.1")
	innerB  = netip.MustParseAddr("10.0.0.2")
)

// end is one side of the tunnel.
type end struct {
	ns   *testutil.Netns
	bind *Bind
	tun  *tuntest.ChannelTUN
	dev  *device.Device
}

// wgKey is a Curve25519 key pair in the hex form of wireguard-go's UAPI.
type wgKey struct{ private, public string }

func newKey(t *testing.T) wgKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return wgKey{hex.EncodeToString(k.Bytes()), hex.EncodeToString(k.PublicKey().Bytes())}
}

// newTunnel builds both ends and brings the devices up. wrap, if not nil,
// wraps A's TUN around the adapter's wrapper (to doctor recorded flows).
func newTunnel(t *testing.T, wrapA func(tun.Device, *Bind) tun.Device) (a, b *end) {
	t.Helper()
	nsA, nsB := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, nsA, "wa", nsB, "wb")
	nsA.Run(t, "ip", "addr", "add", "2001:db8:ff::1/64", "dev", "wa", "nodad")
	nsB.Run(t, "ip", "addr", "add", "2001:db8:ff::2/64", "dev", "wb", "nodad")
	nsA.Run(t, "ip", "-6", "route", "add", prefixB.String(), "via", "2001:db8:ff::2")
	nsB.Run(t, "ip", "-6", "route", "add", prefixA.String(), "via", "2001:db8:ff::1")
	for _, ns := range []struct {
		n *testutil.Netns
		p netip.Prefix
	}{{nsA, prefixA}, {nsB, prefixB}} {
		if err := ns.n.Do(func() error { _, err := host.AddLocalRoute(ns.p); return err }); err != nil {
			t.Fatalf("local route %v: %v", ns.p, err)
		}
	}

	var key hash.Key
	rand.Read(key[:])
	kA, kB := newKey(t), newKey(t)
	a = newEnd(t, nsA, conn.Config{Range: conn.Range{Prefix: prefixA}, Port: linkA.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}}}}, wrapA)
	b = newEnd(t, nsB, conn.Config{Range: conn.Range{Prefix: prefixB}, Port: linkB.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}}}}, nil)
	a.configure(t, kA, kB, linkA.Port(), linkB, innerB)
	b.configure(t, kB, kA, linkB.Port(), linkA, innerA)
	return a, b
}

func newEnd(t *testing.T, ns *testutil.Netns, cfg conn.Config, wrap func(tun.Device, *Bind) tun.Device) *end {
	t.Helper()
	e := &end{ns: ns, bind: NewBind(cfg), tun: tuntest.NewChannelTUN()}
	// wireguard-go opens the Bind from its own goroutines; open the conn
	// on a thread inside the namespace, where its socket stays.
	e.bind.listen = func(cfg conn.Config) (c *conn.FlowSpreadConn, err error) {
		err = ns.Do(func() error { c, err = conn.Listen(cfg); return err })
		return c, err
	}
	var td tun.Device = WrapTUN(e.tun.TUN(), e.bind)
	if wrap != nil {
		td = wrap(td, e.bind)
	}
	e.dev = device.NewDevice(td, e.bind, device.NewLogger(device.LogLevelError, fmt.Sprintf("(%s) ", ns.Name)))
	t.Cleanup(e.dev.Close)
	return e
}

func (e *end) configure(t *testing.T, self, peer wgKey, port uint16, peerAddr netip.AddrPort, peerInner netip.Addr) {
	t.Helper()
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
		self.private, port, peer.public, peerAddr, peerInner)
	if err := e.dev.IpcSet(cfg); err != nil {
		t.Fatalf("IpcSet: %v", err)
	}
	if err := e.dev.Up(); err != nil {
		t.Fatalf("device up: %v", err)
	}
}

// endpoint returns the peer endpoint that the device reports over UAPI.
func (e *end) endpoint(t *testing.T) string { return deviceEndpoint(t, e.dev) }

// deviceEndpoint returns the peer endpoint that dev reports over UAPI.
func deviceEndpoint(t *testing.T, dev *device.Device) string {
	t.Helper()
	s, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "endpoint="); ok {
			return v
		}
	}
	return ""
}

// innerUDP returns an IPv4/UDP packet with the given ECN codepoint.
func innerUDP(src, dst netip.Addr, sport, dport uint16, ecn flowaddr.ECN, payload string) []byte {
	ip := testutil.IPv4(src, dst)
	ip.TOS = uint8(ecn)
	return testutil.Build(ip, testutil.UDP(sport, dport), gopacket.Payload(payload))
}

// receive waits for n packets at e's TUN, failing the test after a long
// timeout (a hang, not a speed check).
func (e *end) receive(t *testing.T, n int) [][]byte {
	t.Helper()
	var got [][]byte
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case p := <-e.tun.Inbound:
			got = append(got, p)
		case <-timeout:
			t.Fatalf("received %d of %d packets; A stats %+v", len(got), n, e.bind.Stats())
		}
	}
	return got
}

func (e *end) send(p []byte) { e.tun.Outbound <- p }

func TestTunnelSpreadsFlows(t *testing.T) {
	a, b := newTunnel(t, nil)
	const flows = 64
	sent := map[string]bool{}
	for i := range flows {
		p := innerUDP(innerA, innerB, uint16(40000+i), 9000, flowaddr.NotECT, fmt.Sprintf("flow %d", i))
		sent[string(p)] = true
		a.send(p)
	}
	for _, p := range b.receive(t, flows) {
		if !sent[string(p)] {
			t.Errorf("B received a packet A did not send: %x", p)
		}
		delete(sent, string(p))
	}
	// Replies, so both directions carry spread data: B learned each flow
	// from the probe copy of A's datagram on its pair, A learns it from
	// B's reply there, and A's second datagram of each flow goes on it
	// (its first waited on the canonical pair, which SentPerAddress does
	// not count).
	for i := range flows {
		b.send(innerUDP(innerB, innerA, 9000, uint16(40000+i), flowaddr.NotECT, "reply"))
	}
	a.receive(t, flows)
	for i := range flows {
		a.send(innerUDP(innerA, innerB, uint16(40000+i), 9000, flowaddr.NotECT, fmt.Sprintf("flow %d again", i)))
	}
	b.receive(t, flows)

	sa, sb := a.bind.Stats(), b.bind.Stats()
	t.Logf("A bind %+v\nB bind %+v", sa, sb)
	if sa.SentSpread < flows || sb.SentSpread < flows {
		t.Errorf("spread datagrams: A %d, B %d; want at least %d each (unmatched A %d, B %d)",
			sa.SentSpread, sb.SentSpread, flows, sa.SentUnmatched, sb.SentUnmatched)
	}
	// The handshake (initiation from A, response from B) went unspread,
	// and completed: the data above was delivered.
	if sa.SentControl == 0 || sb.SentControl == 0 {
		t.Errorf("handshake datagrams: A %d, B %d; want at least 1 each", sa.SentControl, sb.SentControl)
	}
	for _, e := range []*end{a, b} {
		used := 0
		for _, n := range e.bind.Conn().Stats().SentPerAddress {
			if n > 0 {
				used++
			}
		}
		if used < flows/2 {
			t.Errorf("%s sent from %d source addresses for %d flows; want at least %d", e.ns.Name, used, flows, flows/2)
		}
	}
	if got, want := a.endpoint(t), linkB.String(); got != want {
		t.Errorf("A's endpoint for B = %q, want the canonical %q", got, want)
	}
	if got, want := b.endpoint(t), linkA.String(); got != want {
		t.Errorf("B's endpoint for A = %q, want the canonical %q", got, want)
	}
}

// ceTUN marks the recorded flow of every packet it reads CE, so that A
// sends a CE-marked outer header, as a congested hop on the path would
// have marked it.
type ceTUN struct {
	tun.Device
	b *Bind
}

func (t *ceTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	for i := 0; i < n; i++ {
		pkt := bufs[i][offset : offset+sizes[i]]
		f := t.b.Conn().Classify(pkt)
		f.ECN = flowaddr.CE
		mtu, _ := t.Device.MTU()
		t.b.recordFlow(bufs[i], offset, len(pkt), f, mtu)
	}
	return n, err
}

func TestTunnelCarriesCE(t *testing.T) {
	a, b := newTunnel(t, func(d tun.Device, bd *Bind) tun.Device { return &ceTUN{Device: d, b: bd} })
	// The first packet starts the handshake; its delivery shows the
	// tunnel is up before the ECN checks.
	a.send(innerUDP(innerA, innerB, 1, 9000, flowaddr.ECT0, "warm-up"))
	b.receive(t, 1)

	tests := []struct {
		name  string
		inner flowaddr.ECN
		want  flowaddr.ECN // of the delivered packet
		drop  bool
	}{
		{"ECT(0) becomes CE", flowaddr.ECT0, flowaddr.CE, false},
		{"ECT(1) becomes CE", flowaddr.ECT1, flowaddr.CE, false},
		{"CE stays CE", flowaddr.CE, flowaddr.CE, false},
		{"Not-ECT is dropped", flowaddr.NotECT, 0, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.bind.Stats()
			if tt.drop {
				a.send(innerUDP(innerA, innerB, uint16(2000+i), 9000, tt.inner, "dropped"))
			}
			// A packet that must arrive: after the dropped one, in
			// order, so its arrival shows the other was dropped.
			probe := innerUDP(innerA, innerB, uint16(3000+i), 9000, tt.inner, "probe")
			if tt.drop {
				probe = innerUDP(innerA, innerB, uint16(3000+i), 9000, flowaddr.ECT0, "probe")
			}
			a.send(probe)
			got := b.receive(t, 1)[0]
			if string(got[28:]) != "probe" {
				t.Fatalf("B received %q, want the probe", got[28:])
			}
			after := b.bind.Stats()
			if tt.drop {
				if after.CEDropped != before.CEDropped+1 {
					t.Errorf("CEDropped %d -> %d, want one more", before.CEDropped, after.CEDropped)
				}
				return
			}
			if ecn := flowaddr.ECN(got[1] & 3); ecn != tt.want {
				t.Errorf("inner ECN delivered = %v, want %v", ecn, tt.want)
			}
			if !ipv4ChecksumOK(got[:20]) {
				t.Errorf("inner IPv4 header checksum is wrong after marking: %x", got[:20])
			}
		})
	}
	if s := b.bind.Stats(); s.RecvUnmatched != 0 {
		t.Errorf("B wrote %d packets without a matching outer ECN record", s.RecvUnmatched)
	}
}

func ipv4ChecksumOK(h []byte) bool {
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}
