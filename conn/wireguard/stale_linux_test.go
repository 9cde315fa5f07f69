package wireguard

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// packetTUN is a TUN whose Read returns its next packet, one per call.
type packetTUN struct {
	tun.Device // nil: only Read is called
	next       []byte
}

func (t *packetTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	sizes[0] = copy(bufs[0][offset:], t.next)
	return 1, nil
}

// wireSink is a plain UDP socket standing for the peer: it reports the
// outer addresses and ECN field of each datagram as the kernel saw them.
type wireSink struct {
	pc   *ipv6.PacketConn
	port uint16
}

type sinkArrival struct {
	src, dst netip.Addr
	ecn      flowaddr.ECN
}

func (a sinkArrival) String() string {
	return fmt.Sprintf("%v -> %v %v", a.src, a.dst, a.ecn)
}

func newWireSink(t testing.TB, ns *testutil.Netns) *wireSink {
	t.Helper()
	s := &wireSink{}
	err := ns.Do(func() error {
		uc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return err
		}
		s.pc, s.port = ipv6.NewPacketConn(uc), uint16(uc.LocalAddr().(*net.UDPAddr).Port)
		return s.pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagTrafficClass, true)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.pc.Close() })
	return s
}

func (s *wireSink) read(t *testing.T) sinkArrival {
	t.Helper()
	s.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	_, cm, src, err := s.pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	sa, _ := netip.AddrFromSlice(src.(*net.UDPAddr).IP)
	da, _ := netip.AddrFromSlice(cm.Dst)
	return sinkArrival{sa, da, flowaddr.ECN(cm.TrafficClass & 3)}
}

// staleSetup opens a Bind spreading over prefixA to one peer, the sink,
// with canonical address 2001:db8:b::1 and range prefixB, in a namespace
// where both prefixes are local, and wraps a packetTUN for it.
func staleSetup(t testing.TB) (b *Bind, td tun.Device, src *packetTUN, sink *wireSink, ep *Endpoint, ma, mb *flowaddr.Mapper) {
	t.Helper()
	ns := testutil.NewNetns(t)
	for _, p := range []netip.Prefix{prefixA, prefixB} {
		ns.Run(t, "ip", "-6", "route", "add", "local", p.String(), "dev", "lo")
	}
	sink = newWireSink(t, ns)
	peer := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), sink.port)
	var key hash.Key
	rand.Read(key[:])
	// Open: the sink never answers, and these tests are about the send
	// link, not about learning paths.
	b = NewBind(conn.Config{Range: conn.Range{Prefix: prefixA}, Key: key, Peers: []conn.Peer{{Addr: peer, Range: conn.Range{Prefix: prefixB}, Open: true}}})
	b.listen = func(cfg conn.Config) (c *conn.FlowSpreadConn, err error) {
		err = ns.Do(func() error { c, err = conn.Listen(cfg); return err })
		return c, err
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	e, err := b.ParseEndpoint(peer.String())
	if err != nil {
		t.Fatal(err)
	}
	src = &packetTUN{}
	return b, WrapTUN(src, b), src, sink, e.(*Endpoint), testMapper(t, prefixA), testMapper(t, prefixB)
}

func testMapper(t testing.TB, p netip.Prefix) *flowaddr.Mapper {
	t.Helper()
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: p, Bits: conn.DefaultBits})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestStaleRecordNotUsed plays a wireguard-go that copies ciphertext into
// pooled buffers: a buffer read for one flow and sent, then reused for
// another flow's datagram of the same sealed length without a TUN read.
// The second datagram must go unspread, on the canonical pair and
// without the first flow's ECN, and count as unmatched data.
func TestStaleRecordNotUsed(t *testing.T) {
	b, td, src, sink, ep, ma, mb := staleSetup(t)
	x := innerUDP(innerA, innerB, 40001, 9000, flowaddr.ECT0, string(make([]byte, 72))) // 100 bytes
	y := innerUDP(innerA, innerB, 40002, 9000, flowaddr.NotECT, string(make([]byte, 70)))
	if len(x) != 100 || len(y) != 98 {
		t.Fatalf("inner packets of %d and %d bytes, want 100 and 98", len(x), len(y))
	}
	h := b.Conn().Classify(x).Hash

	m := new(message)
	src.next = x
	sizes := make([]int, 1)
	if n, err := td.Read([][]byte{m[:]}, sizes, readOffset); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	// wireguard-go seals x in place and sends it: spread.
	if err := b.Send([][]byte{transport(m, len(x))}, ep); err != nil {
		t.Fatal(err)
	}
	got := sink.read(t)
	if want := (sinkArrival{ma.Addr(h), mb.Addr(h), flowaddr.ECT0}); got != want {
		t.Fatalf("x arrived as %v, want %v", got, want)
	}

	// The same buffer now carries y's datagram, 144 bytes like x's, with
	// no TUN read of y: x's record must not lend it x's pair and ECN.
	if err := b.Send([][]byte{transport(m, len(y))}, ep); err != nil {
		t.Fatal(err)
	}
	got = sink.read(t)
	if got.dst != ep.AddrPort().Addr() || got.ecn != flowaddr.NotECT {
		t.Errorf("y arrived as %v, want unspread to %v with Not-ECT", got, ep.AddrPort().Addr())
	}
	if s := b.Stats(); s.SentSpread != 1 || s.SentUnmatched != 1 || s.SentControl != 0 {
		t.Errorf("stats %+v, want 1 spread and 1 unmatched", s)
	}
}

// TestReadAndSendDoNotAllocate guards the whole send path of one packet:
// the wrapper's Read that records it and the Send that consumes it.
func TestReadAndSendDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes Send's sync.Pool drop items at random")
	}
	// The sink is not read: the kernel drops what overflows its buffer.
	b, td, src, _, ep, _, _ := staleSetup(t)
	src.next = innerUDP(innerA, innerB, 40001, 9000, flowaddr.ECT0, "payload")
	m := new(message)
	bufs, sizes, dgram := [][]byte{m[:]}, make([]int, 1), make([][]byte, 1)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := td.Read(bufs, sizes, readOffset); err != nil {
			t.Fatal(err)
		}
		dgram[0] = transport(m, sizes[0])
		if err := b.Send(dgram, ep); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Read and Send allocate %v times a packet, want 0", allocs)
	}
	if s := b.Stats(); s.SentUnmatched != 0 || s.SentSpread == 0 {
		t.Errorf("stats %+v, want every packet spread", s)
	}
}
