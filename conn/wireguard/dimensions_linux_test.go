package wireguard

import (
	"crypto/rand"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// TestTunnelDimensions runs wireguard-go devices on kernel TUNs over a
// veth, each end spreading over ports, on IPv6 and IPv4, and over IPv6
// addresses and ports together, learning its paths (no peer is Open):
// ping, TCP and 64 UDP flows opened at each end complete; on B's wire
// each direction's data uses many outer pairs, each inside the sender's
// range and the receiver's, B's answers on pairs A sent on, reversed;
// and each end reports the other at its canonical endpoint throughout.
func TestTunnelDimensions(t *testing.T) {
	portsA := conn.PortRange{First: 40000, Bits: 4}
	portsB := conn.PortRange{First: 41000, Bits: 4}
	for _, tc := range []struct {
		name         string
		linkA, linkB netip.AddrPort
		rangeA       conn.Range
		rangeB       conn.Range
	}{
		{"IPv6 ports", netip.MustParseAddrPort("[2001:db8:ff::1]:5000"), netip.MustParseAddrPort("[2001:db8:ff::2]:6000"),
			conn.Range{Ports: portsA}, conn.Range{Ports: portsB}},
		{"IPv4 ports", netip.MustParseAddrPort("192.0.2.1:5000"), netip.MustParseAddrPort("192.0.2.2:6000"),
			conn.Range{Ports: portsA}, conn.Range{Ports: portsB}},
		{"IPv6 addresses and ports", netip.MustParseAddrPort("[2001:db8:ff::1]:5000"), netip.MustParseAddrPort("[2001:db8:ff::2]:6000"),
			conn.Range{Prefix: prefixA, Bits: 4, Ports: portsA}, conn.Range{Prefix: prefixB, Bits: 4, Ports: portsB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newDimensionTunnel(t, tc.linkA, tc.linkB, tc.rangeA, tc.rangeB)
			capture := startPairCapture(t, b.ns, "wb")
			natTraffic(t, a, b, tc.linkA.String())
			if got := a.endpoint(t); got != tc.linkB.String() {
				t.Errorf("A reports B at %q, want its canonical endpoint %v", got, tc.linkB)
			}
			toB, fromB := capture.stop(t, func(ap netip.AddrPort) bool { return ap == tc.linkB || inRange(ap, tc.linkB, tc.rangeB) }, tc.linkB, tc.linkA)
			t.Logf("on B's wire: data on %d spread pairs to B, %d from B; A conn %+v; B conn %+v",
				len(toB), len(fromB), pathStats(a.bind.Conn()), pathStats(b.bind.Conn()))
			// 64 UDP flows each way over 16 ports miss a port with odds
			// of 1 in 4; missing 5 is next to impossible.
			if want := 12; len(toB) < want || len(fromB) < want {
				t.Errorf("data on %d outer pairs to B and %d from B, want at least %d each", len(toB), len(fromB), want)
			}
			for p := range toB {
				if !inRange(p.src, tc.linkA, tc.rangeA) || !inRange(p.dst, tc.linkB, tc.rangeB) {
					t.Errorf("data to B on %v -> %v: outside A's range or B's", p.src, p.dst)
				}
			}
			for p := range fromB {
				if toB[natPair{p.dst, p.src}] == 0 {
					t.Errorf("B sent data on %v -> %v, a pair A never sent on", p.src, p.dst)
				}
			}
			for _, e := range []*fwEnd{a, b} {
				if st := e.bind.Stats(); st.SentUnmatched != 0 || st.RecvUnmatched != 0 || st.Observed == 0 {
					t.Errorf("%s bind: %d sent and %d received unmatched, %d observed; want none unmatched", e.ns.Name, st.SentUnmatched, st.RecvUnmatched, st.Observed)
				}
			}
		})
	}
}

// inRange reports whether ap is an address and port of the range of the
// end whose canonical endpoint is canon.
func inRange(ap, canon netip.AddrPort, r conn.Range) bool {
	addrOK := ap.Addr() == canon.Addr() || r.Prefix.Contains(ap.Addr())
	return addrOK && r.Ports.Contains(ap.Port())
}

// newDimensionTunnel joins A and B by a veth, gives each its canonical
// address (and the other's prefix a route, its own a local route), and
// brings up a device at each end that knows the other's range.
func newDimensionTunnel(t *testing.T, linkA, linkB netip.AddrPort, rangeA, rangeB conn.Range) (a, b *fwEnd) {
	t.Helper()
	nsA, nsB := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, nsA, "wa", nsB, "wb")
	bits := "/24"
	if linkA.Addr().Is6() {
		bits = "/64"
	}
	nsA.Run(t, "ip", "addr", "add", linkA.Addr().String()+bits, "dev", "wa", "nodad")
	nsB.Run(t, "ip", "addr", "add", linkB.Addr().String()+bits, "dev", "wb", "nodad")
	for _, e := range []struct {
		ns, other *testutil.Netns
		p         netip.Prefix
		via       netip.Addr
	}{{nsA, nsB, rangeA.Prefix, linkA.Addr()}, {nsB, nsA, rangeB.Prefix, linkB.Addr()}} {
		if !e.p.IsValid() {
			continue
		}
		e.other.Run(t, "ip", "-6", "route", "add", e.p.String(), "via", e.via.String())
		if err := e.ns.Do(func() error { _, err := host.AddLocalRoute(e.p); return err }); err != nil {
			t.Fatalf("local route %v: %v", e.p, err)
		}
	}
	var key hash.Key
	rand.Read(key[:])
	kA, kB := newKey(t), newKey(t)
	a = newFwEnd(t, nsA, conn.Config{Range: rangeA, Port: linkA.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: linkB, Range: rangeB}}})
	b = newFwEnd(t, nsB, conn.Config{Range: rangeB, Port: linkB.Port(), Key: key, Symmetric: true,
		Peers: []conn.Peer{{Addr: linkA, Range: rangeA}}})
	a.configure(t, kA, kB, linkA.Port(), linkB, innerB, innerA, "")
	b.configure(t, kB, kA, linkB.Port(), linkA, innerA, innerB, "")
	return a, b
}
