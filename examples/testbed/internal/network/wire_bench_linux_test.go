package network

import (
	"net/netip"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// BenchmarkWireRoundTrip measures what the wire adds to a round trip: a
// 1200-byte UDP echo between two namespaces over a plain veth pair (the
// baseline) and through the wire, which runs in this process so that its
// allocations count. One op is one round trip, each way through the wire.
func BenchmarkWireRoundTrip(b *testing.B) {
	b.Run("veth", func(b *testing.B) {
		a, z := testutil.NewNetns(b), testutil.NewNetns(b)
		testutil.Veth(b, a, "va", z, "vb")
		benchEcho(b, a, z)
	})
	b.Run("wire", func(b *testing.B) {
		a, w, z := testutil.NewNetns(b), testutil.NewNetns(b), testutil.NewNetns(b)
		w.Run(b, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
		testutil.Veth(b, a, "va", w, "wa")
		testutil.Veth(b, w, "wb", z, "vb")
		for _, side := range []struct {
			ns  *testutil.Netns
			dev string
		}{{a, "va"}, {w, "wa"}, {w, "wb"}, {z, "vb"}} {
			side.ns.Run(b, "ethtool", "-K", side.dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
		}
		var wr *wire
		if err := w.Do(func() (err error) {
			wr, err = openWire("wa", "wb")
			return err
		}); err != nil {
			b.Fatal(err)
		}
		// The forwarding goroutines end when the namespace goes, taking
		// the interfaces with it (the sockets then fail with ENETDOWN).
		go wr.run()
		benchEcho(b, a, z)
		if s := wr.stats(); s.Lost() != 0 {
			b.Errorf("the wire lost frames: %+v", s)
		}
	})
}

func benchEcho(b *testing.B, a, z *testutil.Netns) {
	a.Run(b, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	z.Run(b, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")
	server := netip.MustParseAddrPort("[2001:db8:1::2]:9000")
	cli := dialEcho(b, a, z, server)
	payload, buf := make([]byte, 1200), make([]byte, 2048)
	echo := func() {
		if _, err := cli.Write(payload); err != nil {
			b.Fatal(err)
		}
		if _, err := cli.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	echo() // neighbour discovery happens here, outside the clock
	cli.SetReadDeadline(time.Time{})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		echo()
	}
}
