package conn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// The spread prefix routed to the test namespace's loopback, and the
// address its senders use (on lo, outside the prefix).
var (
	testPrefix = netip.MustParsePrefix("2001:db8:b::/64")
	testSender = netip.MustParseAddr("2001:db8:a::1")
)

// anyIPNetns makes a namespace with an AnyIP local route for testPrefix
// and testSender on its loopback.
func anyIPNetns(t testing.TB) *testutil.Netns {
	t.Helper()
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "-6", "route", "add", "local", testPrefix.String(), "dev", "lo")
	ns.Run(t, "ip", "-6", "addr", "add", testSender.String()+"/128", "dev", "lo", "nodad")
	return ns
}

// listenUDP opens a UDP socket inside ns; laddr "" means a dual-stack
// socket on [::] with an ephemeral port. It is closed when the test ends.
func listenUDP(t testing.TB, ns *testutil.Netns, network string, laddr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var uc *net.UDPConn
	err := ns.Do(func() (err error) {
		var a *net.UDPAddr
		if laddr.IsValid() {
			a = net.UDPAddrFromAddrPort(laddr)
		}
		uc, err = net.ListenUDP(network, a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// dialUDP opens a UDP socket inside ns from laddr connected to raddr.
func dialUDP(t testing.TB, ns *testutil.Netns, laddr, raddr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var uc *net.UDPConn
	err := ns.Do(func() (err error) {
		network := "udp6"
		if raddr.Addr().Is4() {
			network = "udp4"
		}
		uc, err = net.DialUDP(network, net.UDPAddrFromAddrPort(laddr), net.UDPAddrFromAddrPort(raddr))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

func localAddrPort(uc *net.UDPConn) netip.AddrPort {
	return uc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// newTestAnyIP opens a dual-stack receiver socket in ns and its receiver.
func newTestAnyIP(t testing.TB, ns *testutil.Netns, disableGRO bool) (*anyIPReceiver, uint16) {
	t.Helper()
	uc := listenUDP(t, ns, "udp", netip.AddrPort{})
	r, err := newAnyIPReceiver([]*net.UDPConn{uc}, disableGRO, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.close() })
	return r.(*anyIPReceiver), localAddrPort(uc).Port()
}

func makeMsgs(n, size int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	return msgs
}

// readN reads until it has n datagrams, failing the test on an error. A
// read deadline guards against a hang when datagrams are lost.
func readN(t testing.TB, r receiver, msgs []Message, n int, each func(Message)) {
	t.Helper()
	if err := r.setReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer r.setReadDeadline(time.Time{})
	for got := 0; got < n; {
		k, err := r.readBatch(msgs)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", got, n, err)
		}
		if k < 1 || k > len(msgs) {
			t.Fatalf("readBatch returned %d for %d messages", k, len(msgs))
		}
		for _, m := range msgs[:k] {
			each(m)
		}
		got += k
	}
}

func TestAnyIPReceivesEveryAddressOfThePrefix(t *testing.T) {
	for _, tt := range []struct {
		name       string
		disableGRO bool
	}{
		{"gro", false},
		{"no-gro", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := anyIPNetns(t)
			r, port := newTestAnyIP(t, ns, tt.disableGRO)
			if r.caps().GRO == tt.disableGRO {
				t.Fatalf("caps %+v with disableGRO %v", r.caps(), tt.disableGRO)
			}
			if !r.caps().Batch {
				t.Errorf("caps %+v: recvmmsg not found", r.caps())
			}
			send := listenUDP(t, ns, "udp6", netip.AddrPortFrom(testSender, 0))
			src := localAddrPort(send)

			const count = 300
			for i := range count {
				dst := netip.AddrPortFrom(addrInPrefix(testPrefix, uint64(i+1)), port)
				var p [100]byte
				binary.BigEndian.PutUint32(p[:], uint32(i))
				if _, err := send.WriteToUDPAddrPort(p[:], dst); err != nil {
					t.Fatal(err)
				}
				if i%50 == 49 {
					// Drain as we go so the receive buffer never overflows.
					readAndCheck(t, r, src, port, i-49, i+1)
				}
			}
		})
	}
}

// readAndCheck reads the datagrams numbered [from, to) and checks each was
// sent to the address its number says, from src.
func readAndCheck(t *testing.T, r *anyIPReceiver, src netip.AddrPort, port uint16, from, to int) {
	t.Helper()
	seen := make(map[int]bool)
	readN(t, r, makeMsgs(16, 1500), to-from, func(m Message) {
		if m.N != 100 {
			t.Fatalf("datagram of %d bytes, sent 100", m.N)
		}
		i := int(binary.BigEndian.Uint32(m.Buf))
		if seen[i] || i < from || i >= to {
			t.Fatalf("datagram %d unexpected (reading %d..%d, seen %v)", i, from, to, seen[i])
		}
		seen[i] = true
		want := netip.AddrPortFrom(addrInPrefix(testPrefix, uint64(i+1)), port)
		if m.OuterDst != want {
			t.Errorf("datagram %d: OuterDst %v, want %v", i, m.OuterDst, want)
		}
		if m.OuterSrc != src {
			t.Errorf("datagram %d: OuterSrc %v, want %v", i, m.OuterSrc, src)
		}
	})
}

// addrInPrefix returns the address of prefix p (at most a /64) whose
// interface identifier is id.
func addrInPrefix(p netip.Prefix, id uint64) netip.Addr {
	a := p.Addr().As16()
	binary.BigEndian.PutUint64(a[8:], id)
	return netip.AddrFrom16(a)
}

func setTrafficClass(t *testing.T, uc *net.UDPConn, v6 bool, tc int) {
	t.Helper()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tc)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, tc)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

func TestAnyIPReportsOuterECN(t *testing.T) {
	ns := anyIPNetns(t)
	r, port := newTestAnyIP(t, ns, false)
	dst6 := netip.AddrPortFrom(addrInPrefix(testPrefix, 7), port)
	dst4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	for _, tt := range []struct {
		name   string
		dst    netip.AddrPort
		tclass int
		want   flowaddr.ECN
	}{
		{"v6-not-ect", dst6, 0x00, 0},
		{"v6-ect1", dst6, 0x01, 1},
		{"v6-ect0-with-dscp", dst6, 0xb8 | 0x02, 2},
		{"v6-ce", dst6, 0x03, 3},
		{"v4-ect0", dst4, 0x02, 2},
		{"v4-ce", dst4, 0x03, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var laddr netip.AddrPort
			if tt.dst.Addr().Is6() {
				laddr = netip.AddrPortFrom(testSender, 0)
			}
			send := dialUDP(t, ns, laddr, tt.dst)
			setTrafficClass(t, send, tt.dst.Addr().Is6(), tt.tclass)
			if _, err := send.Write([]byte("ecn")); err != nil {
				t.Fatal(err)
			}
			readN(t, r, makeMsgs(4, 1500), 1, func(m Message) {
				if m.ECN != tt.want {
					t.Errorf("ECN %d, want %d (traffic class %#x)", m.ECN, tt.want, tt.tclass)
				}
				if m.OuterDst != tt.dst {
					t.Errorf("OuterDst %v, want %v", m.OuterDst, tt.dst)
				}
				if m.OuterSrc != localAddrPort(send) {
					t.Errorf("OuterSrc %v, want %v", m.OuterSrc, localAddrPort(send))
				}
			})
		})
	}
}

// sendGSO sends payload as one UDP_SEGMENT super-datagram of seg-byte
// segments on the connected socket uc.
func sendGSO(t testing.TB, uc *net.UDPConn, payload []byte, seg int) {
	t.Helper()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), payload, oob, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Skipf("kernel refuses UDP_SEGMENT (GSO): %v", serr)
	}
}

func TestAnyIPSplitsGROSuperDatagrams(t *testing.T) {
	const seg, full, tail = 1200, 10, 500
	payload := make([]byte, full*seg+tail)
	for i := range payload {
		payload[i] = byte(i / seg) // each segment filled with its number
	}
	for _, tt := range []struct {
		name       string
		disableGRO bool
	}{
		{"gro", false},
		{"no-gro", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := anyIPNetns(t)
			r, port := newTestAnyIP(t, ns, tt.disableGRO)
			dst := netip.AddrPortFrom(addrInPrefix(testPrefix, 9), port)
			send := dialUDP(t, ns, netip.AddrPortFrom(testSender, 0), dst)
			sendGSO(t, send, payload, seg)

			// Four messages per read: the 11 segments take three reads,
			// so segments wait in the receiver between reads.
			msgs := makeMsgs(4, 1500)
			k, err := r.readBatch(msgs)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.disableGRO && r.pendTail-r.pendHead != 1 {
				t.Errorf("after the first read %d super-datagrams pending, want 1: the kernel did not coalesce", r.pendTail-r.pendHead)
			}
			next := 0
			check := func(m Message) {
				want := seg
				if next == full {
					want = tail
				}
				if m.N != want {
					t.Errorf("segment %d: %d bytes, want %d", next, m.N, want)
				}
				for _, b := range m.Buf[:m.N] {
					if b != byte(next) {
						t.Fatalf("segment %d holds bytes of segment %d", next, b)
					}
				}
				if m.OuterDst != dst || m.OuterSrc != localAddrPort(send) {
					t.Errorf("segment %d: %v -> %v, want %v -> %v", next, m.OuterSrc, m.OuterDst, localAddrPort(send), dst)
				}
				next++
			}
			for _, m := range msgs[:k] {
				check(m)
			}
			readN(t, r, msgs, full+1-k, check)
			if next != full+1 {
				t.Errorf("got %d segments, want %d", next, full+1)
			}
		})
	}
}

// TestAnyIPGROKeepsOrder sends one flow's datagrams, a super-datagram
// among them, and reads them with GRO into buffers as large as
// wireguard-go's, a few per read: the datagrams before the super-datagram
// land in place, it and those after it wait in the receiver, and the
// flow comes out whole and in order, the datagrams longer than groHead
// included (their ends come from the receiver's own buffer).
func TestAnyIPGROKeepsOrder(t *testing.T) {
	ns := anyIPNetns(t)
	r, port := newTestAnyIP(t, ns, false)
	if !r.c.GRO {
		t.Skip("no UDP GRO on this kernel")
	}
	send := dialUDP(t, ns, netip.AddrPortFrom(testSender, 0), netip.AddrPortFrom(addrInPrefix(testPrefix, 5), port))
	fill := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	for _, d := range [][]byte{fill('A', 300), fill('L', groHead+904)} {
		if _, err := send.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	sendGSO(t, send, slices.Concat(fill('B', 1200), fill('C', 1200), fill('D', 1200)), 1200)
	for _, d := range [][]byte{fill('E', groHead+904), fill('F', 100)} {
		if _, err := send.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"A300", fmt.Sprintf("L%d", groHead+904), "B1200", "C1200", "D1200", fmt.Sprintf("E%d", groHead+904), "F100"}
	var got []string
	readN(t, r, makeMsgs(3, 1<<16-1), len(want), func(m Message) {
		d := m.Buf[:m.N]
		if len(d) == 0 || !bytes.Equal(d, fill(d[0], len(d))) {
			t.Errorf("datagram %d is not one byte repeated: starts %q", len(got), d[:min(len(d), 8)])
		}
		got = append(got, fmt.Sprintf("%c%d", d[0], len(d)))
	})
	if !slices.Equal(got, want) {
		t.Errorf("read %v, want %v", got, want)
	}
}

func TestAnyIPDropsWhatDoesNotFit(t *testing.T) {
	for _, tt := range []struct {
		name       string
		disableGRO bool
	}{
		{"gro", false},
		{"no-gro", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := anyIPNetns(t)
			r, port := newTestAnyIP(t, ns, tt.disableGRO)
			send := dialUDP(t, ns, netip.AddrPortFrom(testSender, 0), netip.AddrPortFrom(addrInPrefix(testPrefix, 3), port))
			for _, size := range []int{100, 1000, 200} {
				if _, err := send.Write(make([]byte, size)); err != nil {
					t.Fatal(err)
				}
			}
			var sizes []int
			readN(t, r, makeMsgs(8, 500), 2, func(m Message) { sizes = append(sizes, m.N) })
			if fmt.Sprint(sizes) != "[100 200]" {
				t.Errorf("read sizes %v, want [100 200]: the 1000-byte datagram does not fit", sizes)
			}
			if d := r.drops(); d.Truncated != 1 {
				t.Errorf("drops %+v, want 1 truncated", d)
			}
		})
	}
}

func TestAnyIPDeadline(t *testing.T) {
	ns := anyIPNetns(t)
	r, _ := newTestAnyIP(t, ns, false)
	for _, tt := range []struct {
		name     string
		deadline time.Time
	}{
		{"past", time.Now().Add(-time.Second)},
		{"future", time.Now().Add(20 * time.Millisecond)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := r.setReadDeadline(tt.deadline); err != nil {
				t.Fatal(err)
			}
			n, err := r.readBatch(makeMsgs(2, 1500))
			if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("readBatch = %d, %v; want 0 and a deadline error", n, err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("error %v is not a net.Error with Timeout", err)
			}
		})
	}
}

func TestAnyIPCloseUnblocksReaders(t *testing.T) {
	ns := anyIPNetns(t)
	for _, disableGRO := range []bool{false, true} {
		r, _ := newTestAnyIP(t, ns, disableGRO)
		errc := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := r.readBatch(makeMsgs(2, 1500))
				errc <- err
			}()
		}
		time.Sleep(10 * time.Millisecond) // let them block; not an assertion
		if err := r.close(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := <-errc; !errors.Is(err, net.ErrClosed) {
				t.Errorf("disableGRO %v: blocked readBatch returned %v after close, want net.ErrClosed", disableGRO, err)
			}
		}
		if err := r.close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if _, err := r.readBatch(makeMsgs(1, 1500)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("readBatch after close: %v, want net.ErrClosed", err)
		}
	}
}

func TestAnyIPReadBatchDoesNotAllocate(t *testing.T) {
	for _, tt := range []struct {
		name       string
		disableGRO bool
	}{
		{"gro", false},
		{"no-gro", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := anyIPNetns(t)
			r, port := newTestAnyIP(t, ns, tt.disableGRO)
			send := dialUDP(t, ns, netip.AddrPortFrom(testSender, 0), netip.AddrPortFrom(addrInPrefix(testPrefix, 5), port))
			checkReadBatchDoesNotAllocate(t, send, r)
		})
	}
}

// TestReceiversConcurrentReaders reads with two goroutines at once: every
// datagram arrives exactly once, and the race detector sees no race.
func TestReceiversConcurrentReaders(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(t *testing.T) (receiver, func(p []byte))
	}{
		{"anyip", func(t *testing.T) (receiver, func(p []byte)) {
			ns := anyIPNetns(t)
			r, port := newTestAnyIP(t, ns, false)
			send := dialUDP(t, ns, netip.AddrPortFrom(testSender, 0), netip.AddrPortFrom(addrInPrefix(testPrefix, 1), port))
			return r, func(p []byte) { send.Write(p) }
		}},
		{"raw", func(t *testing.T) (receiver, func(p []byte)) {
			topo := newRawTopology(t)
			r := topo.receiver(t)
			send := dialUDP(t, topo.a, netip.AddrPortFrom(topo.aAddr, 0), netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), testPort))
			return r, func(p []byte) { send.Write(p) }
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, send := tt.open(t)
			const count = 400
			r.setReadDeadline(time.Now().Add(10 * time.Second))
			seen := make(chan int, count)
			errc := make(chan error, 2)
			for range 2 {
				go func() {
					msgs := makeMsgs(8, 1500)
					for {
						n, err := r.readBatch(msgs)
						if err != nil {
							errc <- err
							return
						}
						for _, m := range msgs[:n] {
							seen <- int(binary.BigEndian.Uint32(m.Buf))
						}
					}
				}()
			}
			var p [64]byte
			got := make(map[int]bool)
			for i := range count {
				binary.BigEndian.PutUint32(p[:], uint32(i))
				send(p[:])
				if i%32 == 31 { // pace the sender so no buffer overflows
					for len(got) < i+1 {
						select {
						case k := <-seen:
							if got[k] {
								t.Fatalf("datagram %d read twice", k)
							}
							got[k] = true
						case err := <-errc:
							t.Fatalf("after %d datagrams: %v", len(got), err)
						}
					}
				}
			}
			for len(got) < count {
				select {
				case k := <-seen:
					if got[k] {
						t.Fatalf("datagram %d read twice", k)
					}
					got[k] = true
				case err := <-errc:
					t.Fatalf("after %d datagrams: %v", len(got), err)
				}
			}
			r.close()
			for range 2 {
				if err := <-errc; !errors.Is(err, net.ErrClosed) {
					t.Errorf("reader ended with %v, want net.ErrClosed", err)
				}
			}
		})
	}
}

// checkReadBatchDoesNotAllocate sends datagrams of 1200 bytes with send,
// four at a time, reads them with r and fails t if that allocates.
func checkReadBatchDoesNotAllocate(t *testing.T, send *net.UDPConn, r receiver) {
	t.Helper()
	msgs := makeMsgs(8, 1500)
	p := make([]byte, 1200)
	var failed error
	allocs := testing.AllocsPerRun(200, func() {
		for range 4 {
			if _, err := send.Write(p); err != nil {
				failed = err
				return
			}
		}
		for got := 0; got < 4; {
			n, err := r.readBatch(msgs)
			if err != nil {
				failed = err
				return
			}
			got += n
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per send and read of 4 datagrams, want 0", allocs)
	}
}
