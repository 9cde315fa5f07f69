package conn_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
	"golang.org/x/sys/unix"
)

// Fixed ports: each test has its own namespace.
const portA, portB = 51820, 51821

var (
	canonA = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:a::1"), portA)
	canonB = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), portB)
)

// freebindSocket opens a plain UDP socket in ns bound to laddr, which may
// be any address of a local prefix: a stand-in for a peer or a stranger.
func freebindSocket(t testing.TB, ns *testutil.Netns, laddr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var uc *net.UDPConn
	err := ns.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var e error
			rc.Control(func(fd uintptr) { e = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1) })
			return e
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp6", laddr.String())
		if err != nil {
			return err
		}
		uc = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		t.Fatalf("bind %v: %v", laddr, err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// endA opens A's conn in ns: prefix A, one peer B with prefix B.
func endA(t testing.TB, ns *testutil.Netns, cfg conn.Config) *conn.FlowSpreadConn {
	cfg.Range.Prefix, cfg.Port = prefixA, portA
	cfg.Peers = []conn.Peer{{Addr: canonB, Range: conn.Range{Prefix: prefixB}, Open: true}}
	return listenIn(t, ns, cfg)
}

// outsideRange returns an address of p that m does not use, far from the
// low addresses (such as the canonical ::1).
func outsideRange(t testing.TB, m *flowaddr.Mapper, p netip.Prefix) netip.Addr {
	t.Helper()
	a16 := p.Addr().As16()
	a16[8], a16[15] = 0x12, 0x34
	a := netip.AddrFrom16(a16)
	for range 1 << 16 {
		a = a.Next()
		if _, ok := m.BucketOf(a.As16()); !ok {
			return a
		}
	}
	t.Fatalf("found no address of %v outside the range", p)
	return netip.Addr{}
}

func TestReadMapsPeers(t *testing.T) {
	ns := loopbackNetns(t, prefixA, prefixB)
	c := endA(t, ns, conn.Config{})
	ma, mb := mapper(t, prefixA, 0), mapper(t, prefixB, 0)
	inRangeB := addrOf(mb, 12345<<40)
	inRangeA := netip.AddrPortFrom(addrOf(ma, 777<<40), portA)
	marker := freebindSocket(t, ns, canonB)

	type drop int
	const (
		kept drop = iota
		foreign
		outside
	)
	tests := []struct {
		name string
		from netip.AddrPort
		to   netip.AddrPort
		want drop
	}{
		{"peer canonical to our range", canonB, inRangeA, kept},
		{"peer range to our range", netip.AddrPortFrom(inRangeB, portB), inRangeA, kept},
		{"peer canonical to our canonical", canonB, canonA, kept},
		{"peer canonical to our prefix outside our range", canonB, netip.AddrPortFrom(outsideRange(t, ma, prefixA), portA), kept},
		{"peer range to our non-prefix address", netip.AddrPortFrom(inRangeB, portB), netip.MustParseAddrPort("[::1]:51820"), kept},
		{"peer range, wrong port", netip.AddrPortFrom(inRangeB, 9999), inRangeA, foreign},
		{"peer prefix outside its range", netip.AddrPortFrom(outsideRange(t, mb, prefixB), portB), inRangeA, foreign},
		{"stranger", netip.MustParseAddrPort("[::1]:51821"), inRangeA, foreign},
		{"our prefix outside our range", netip.AddrPortFrom(inRangeB, portB), netip.AddrPortFrom(outsideRange(t, ma, prefixA), portA), outside},
	}
	buf := make([]byte, 1500)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.Stats()
			var from *net.UDPConn
			if tt.from == canonB {
				from = marker
			} else {
				from = freebindSocket(t, ns, tt.from)
			}
			if _, err := from.WriteToUDPAddrPort([]byte(tt.name), tt.to); err != nil {
				t.Fatal(err)
			}
			// A marker datagram after it: a dropped datagram must not be
			// what the read returns.
			if _, err := marker.WriteToUDPAddrPort([]byte("marker"), inRangeA); err != nil {
				t.Fatal(err)
			}
			n, info, err := c.ReadMsg(buf)
			if err != nil {
				t.Fatal(err)
			}
			got := string(buf[:n])
			after := c.Stats()
			switch tt.want {
			case kept:
				if got != tt.name {
					t.Fatalf("read %q, want the datagram %q", got, tt.name)
				}
				if info.Peer != canonB || info.OuterSrc != tt.from {
					t.Errorf("Peer %v, OuterSrc %v; want %v, %v", info.Peer, info.OuterSrc, canonB, tt.from)
				}
				if info.OuterDst.Addr() != tt.to.Addr() {
					t.Errorf("OuterDst %v, want %v", info.OuterDst, tt.to)
				}
				if n, _, err := c.ReadMsg(buf); err != nil || string(buf[:n]) != "marker" {
					t.Errorf("second read: %q, %v; want the marker", buf[:n], err)
				}
			case foreign, outside:
				if got != "marker" {
					t.Fatalf("read %q, want the marker: the datagram should be dropped", got)
				}
				counter, other := after.DroppedForeign-before.DroppedForeign, after.DroppedOutsideRange-before.DroppedOutsideRange
				if tt.want == outside {
					counter, other = other, counter
				}
				if counter != 1 || other != 0 {
					t.Errorf("drop counters grew by %d (this reason) and %d (the other); want 1 and 0", counter, other)
				}
			}
		})
	}
}

// TestRoundTripSymmetric checks flow symmetry end to end: with the same
// key at both ends, a reply travels on its request's outer address pair,
// and each end reads the other's canonical address.
func TestRoundTripSymmetric(t *testing.T) {
	ns := loopbackNetns(t, prefixA, prefixB)
	a := endA(t, ns, conn.Config{Key: testKey, Symmetric: true})
	b := listenIn(t, ns, conn.Config{Range: conn.Range{Prefix: prefixB}, Port: portB, Key: testKey, Symmetric: true,
		Peers: []conn.Peer{{Addr: canonA, Range: conn.Range{Prefix: prefixA}, Open: true}}})
	buf := make([]byte, 1500)
	pairs := map[[2]netip.Addr]bool{}
	for i := range 64 {
		sport := uint16(40000 + i)
		req := udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", sport, 53)
		rep := udp6Packet(t, "2001:db8:2::2", "2001:db8:1::1", 53, sport)
		if _, err := a.WriteFlow(req, canonB, a.Classify(req)); err != nil {
			t.Fatal(err)
		}
		_, in, err := b.ReadMsg(buf)
		if err != nil {
			t.Fatal(err)
		}
		if in.Peer != canonA {
			t.Errorf("B read Peer %v, want %v", in.Peer, canonA)
		}
		if _, err := b.WriteFlow(rep, canonA, b.Classify(rep)); err != nil {
			t.Fatal(err)
		}
		_, back, err := a.ReadMsg(buf)
		if err != nil {
			t.Fatal(err)
		}
		if back.Peer != canonB {
			t.Errorf("A read Peer %v, want %v", back.Peer, canonB)
		}
		if back.OuterSrc.Addr() != in.OuterDst.Addr() || back.OuterDst.Addr() != in.OuterSrc.Addr() {
			t.Errorf("flow %d: request %v -> %v, reply %v -> %v; want the same pair reversed",
				i, in.OuterSrc.Addr(), in.OuterDst.Addr(), back.OuterSrc.Addr(), back.OuterDst.Addr())
		}
		pairs[[2]netip.Addr{in.OuterSrc.Addr(), in.OuterDst.Addr()}] = true
	}
	if len(pairs) < 50 {
		t.Errorf("64 flows used only %d outer address pairs", len(pairs))
	}
}

func TestCloseAndDeadlines(t *testing.T) {
	ns := loopbackNetns(t, prefixA, prefixB)
	c := endA(t, ns, conn.Config{})
	buf := make([]byte, 100)

	if err := c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.ReadFrom(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v; want a timeout wrapping os.ErrDeadlineExceeded", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFromAddrPort(buf)
		done <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, err := range map[string]error{
		"blocked read": <-done,
		"WriteFlow":    second(c.WriteFlow(buf, canonB, conn.Flow{})),
		"WriteBatch":   second(c.WriteBatch([]conn.Message{{Buf: buf, Peer: canonB}})),
		"ReadBatch":    second(c.ReadBatch([]conn.Message{{Buf: buf}})),
	} {
		var op *net.OpError
		if !errors.Is(err, net.ErrClosed) || !errors.As(err, &op) {
			t.Errorf("%s after Close: %v; want a *net.OpError wrapping net.ErrClosed", name, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }
