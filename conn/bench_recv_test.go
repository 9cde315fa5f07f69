//go:build linux

package conn

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

const (
	benchSize    = 1200 // datagram payload, bytes
	benchBatch   = 64   // messages per receive batch
	benchDsts    = 64   // addresses of the prefix the sender cycles over
	benchGSOSegs = 53   // segments per GSO super-datagram: 63600 bytes
)

// BenchmarkRecv measures receiving 1200-byte datagrams on loopback in a
// namespace with an AnyIP route, while a goroutine sends as fast as it can
// to 64 addresses of the prefix: the plain socket read one at a time and
// in batches (the baselines), and the AnyIP receiver with and without GRO.
// The gso cases send UDP_SEGMENT super-datagrams, which loopback hands to
// a GRO socket whole. b.N counts datagrams received; pkts/s is the rate.
// Both sides share the machine's cores, so the rates are of the pair.
func BenchmarkRecv(b *testing.B) {
	b.Run("plain-readfrom", func(b *testing.B) {
		ns, uc, port := benchReceiverSocket(b)
		startBenchSender(b, ns, port, false)
		buf := make([]byte, 2048)
		benchLoop(b, uc.SetReadDeadline, func() (int, error) {
			_, _, err := uc.ReadFromUDPAddrPort(buf)
			return 1, err
		})
	})
	b.Run("plain-batch", func(b *testing.B) {
		ns, uc, port := benchReceiverSocket(b)
		startBenchSender(b, ns, port, false)
		pc := ipv6.NewPacketConn(uc)
		ms := make([]ipv6.Message, benchBatch)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		benchLoop(b, uc.SetReadDeadline, func() (int, error) { return pc.ReadBatch(ms, 0) })
	})
	for _, tt := range []struct {
		name       string
		gsoSender  bool
		disableGRO bool
	}{
		{"anyip-batch", false, false},
		{"anyip-batch-nogro", false, true},
		{"anyip-gro", true, false},
		{"anyip-gso-nogro", true, true},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ns, uc, port := benchReceiverSocket(b)
			r, err := newAnyIPReceiver(uc, tt.disableGRO)
			if err != nil {
				b.Fatal(err)
			}
			defer r.close()
			if want := !tt.disableGRO; r.caps().GRO != want {
				b.Skipf("GRO %v, want %v: kernel without UDP_GRO", r.caps().GRO, want)
			}
			startBenchSender(b, ns, port, tt.gsoSender)
			msgs := makeMsgs(benchBatch, 2048)
			benchLoop(b, r.setReadDeadline, func() (int, error) { return r.readBatch(msgs) })
		})
	}
}

// benchLoop reads until b.N datagrams arrived and reports the rate. A
// deadline turns a stalled sender into a failure instead of a hang.
func benchLoop(b *testing.B, setDeadline func(time.Time) error, read func() (int, error)) {
	b.ReportAllocs()
	if err := setDeadline(time.Now().Add(time.Minute)); err != nil {
		b.Fatal(err)
	}
	// Warm up: the sender is running and buffers are allocated.
	for got := 0; got < 4*benchBatch; {
		n, err := read()
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
	b.ResetTimer()
	for got := 0; got < b.N; {
		n, err := read()
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
}

// benchReceiverSocket makes a namespace with an AnyIP route and a
// dual-stack UDP socket on [::] with a large receive buffer.
func benchReceiverSocket(b *testing.B) (*testutil.Netns, *net.UDPConn, uint16) {
	ns := anyIPNetns(b)
	uc := listenUDP(b, ns, "udp", netip.AddrPort{})
	rc, err := uc.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		// Root may exceed net.core.rmem_max; fine without, just lossier.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	})
	return ns, uc, localAddrPort(uc).Port()
}

// startBenchSender sends 1200-byte datagrams to benchDsts addresses of the
// prefix from a goroutine until the benchmark ends, with sendmmsg(2)
// batches that it builds once, so it does not allocate. With gso each
// message is a super-datagram of benchGSOSegs segments.
func startBenchSender(b *testing.B, ns *testutil.Netns, port uint16, gso bool) {
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
		if gso {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT, benchSize); err != nil {
				return err
			}
		}
		return unix.Bind(fd, &unix.SockaddrInet6{Addr: testSender.As16()})
	}); err != nil {
		unix.Close(fd)
		b.Skipf("sender: %v", err)
	}
	size := benchSize
	if gso {
		size *= benchGSOSegs
	}
	payload := make([]byte, size)
	hdrs := make([]unix.Mmsghdr, benchDsts)
	iovs := make([]unix.Iovec, benchDsts)
	names := make([]unix.RawSockaddrInet6, benchDsts)
	for i := range hdrs {
		names[i].Family = unix.AF_INET6
		p := (*[2]byte)(unsafe.Pointer(&names[i].Port))
		p[0], p[1] = byte(port>>8), byte(port)
		names[i].Addr = addrInPrefix(testPrefix, uint64(i+1)).As16()
		iovs[i].Base = &payload[0]
		iovs[i].SetLen(size)
		hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
		hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		hdrs[i].Hdr.Iov = &iovs[i]
		hdrs[i].Hdr.SetIovlen(1)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			// Errors (a full buffer) only mean fewer datagrams this round.
			unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
		}
	}()
	b.Cleanup(func() {
		stop.Store(true)
		wg.Wait()
		unix.Close(fd)
	})
}
