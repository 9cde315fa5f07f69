//go:build linux

package conn

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

const (
	benchSize      = 1200 // datagram payload, bytes
	benchBatch     = 64   // messages per receive (and send) batch
	benchFlows     = 1024 // flows of spread-batch: as many as the range has addresses
	benchBulkFlows = 4    // flows of spread-gro
	benchGSOSegs   = 53   // segments per GSO super-datagram: 63600 bytes
	benchRoundLen  = 1024 // datagrams the sender queues at a time, well within the receive buffer
)

// benchPeerPrefix is the peer's spread prefix in BenchmarkRecv; the
// peer's canonical address is testSender, inside it.
var benchPeerPrefix = netip.MustParsePrefix("2001:db8:a::/64")

// BenchmarkRecv measures receiving 1200-byte datagrams on loopback in a
// namespace where our prefix (testPrefix) and the peer's are local:
//
//   - plain-readfrom, plain-batch: the baselines, a plain UDP socket read
//     one datagram at a time and with recvmmsg (x/net/ipv6), receiving one
//     outer pair, from the peer's canonical address to one of ours, as a
//     tunnel that does not spread does.
//   - spread-batch/peers=N: [FlowSpreadConn.ReadBatch], 64 per call, in
//     its default configuration (GRO on), receiving 1024 flows mixed, each
//     from its address of a peer's range to its address of ours, so every
//     datagram goes through the peer lookup and the range check. The conn
//     has N peers (1, 100, 10,000) with prefixes of eight lengths from /48
//     to /96 (benchPeerList), and the flows come from min(N, 1024) of them,
//     so the lookup's maps are not all in the cache: the cost per datagram
//     should not depend on N.
//   - spread-batch-nogro: spread-batch with one peer (testSender,
//     spreading over benchPeerPrefix) and Config.DisableGRO, which lets the
//     kernel write straight into the caller's buffers; the difference to
//     spread-batch is the copy out of the GRO buffers, paid when no
//     traffic coalesces.
//   - spread-gro: ReadBatch while the peer sends 4 bulk flows as UDP GSO
//     super-datagrams of 53 segments, which loopback hands whole to the
//     GRO socket and ReadBatch splits.
//
// On loopback the sender's system call runs the kernel's whole receive
// path up to the socket's queue, which costs several times what the
// reader does: a sender running alongside would set the pace of every
// case and, on 2 cores shared with other work, take the reader's core.
// So the sender queues a round of about 1024 datagrams, which the 8 MiB
// receive buffer holds, while the timer is stopped, and the reader drains
// it with the timer running: pkts/s and allocs are the reader's own. The
// sender is the same in every case: sendmmsg(2) with an IPV6_PKTINFO
// source on each datagram. b.N counts the datagrams received; cpu-ns/op
// is the reader's CPU time per datagram (processCPU).
// BenchmarkAccept and BenchmarkAcceptPeers isolate the peer lookup and
// range check.
//
//	go test ./conn -run '^$' -bench 'BenchmarkSend|BenchmarkRecv' -benchtime 2s
func BenchmarkRecv(b *testing.B) {
	b.Run("plain-readfrom", func(b *testing.B) {
		ns := benchRecvNetns(b)
		snd := newBenchSender(b, ns)
		uc := listenUDP(b, ns, "udp", netip.AddrPort{})
		setRecvBuffer(b, uc)
		snd.prepare(b, localAddrPort(uc).Port(), plainPairs(), false)
		buf := make([]byte, 2048)
		benchLoop(b, snd, uc.SetReadDeadline, func() (int, error) {
			_, _, err := uc.ReadFromUDPAddrPort(buf)
			return 1, err
		})
	})
	b.Run("plain-batch", func(b *testing.B) {
		ns := benchRecvNetns(b)
		snd := newBenchSender(b, ns)
		uc := listenUDP(b, ns, "udp", netip.AddrPort{})
		setRecvBuffer(b, uc)
		snd.prepare(b, localAddrPort(uc).Port(), plainPairs(), false)
		pc := ipv6.NewPacketConn(uc)
		ms := make([]ipv6.Message, benchBatch)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		benchLoop(b, snd, uc.SetReadDeadline, func() (int, error) { return pc.ReadBatch(ms, 0) })
	})
	b.Run("spread-batch", func(b *testing.B) {
		for _, n := range benchPeerCounts {
			b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) { benchRecvSpread(b, n, false, false) })
		}
	})
	b.Run("spread-batch-nogro", func(b *testing.B) { benchRecvSpread(b, 0, true, false) })
	b.Run("spread-gro", func(b *testing.B) { benchRecvSpread(b, 0, false, true) })
	b.Run("spread-ports-batch", func(b *testing.B) { benchRecvPorts(b, Config{}, false) })
	b.Run("spread-ports-batch-nogro", func(b *testing.B) { benchRecvPorts(b, Config{DisableGRO: true}, false) })
	b.Run("spread-ports-batch-unsteered", func(b *testing.B) { benchRecvPorts(b, Config{DisablePortSteering: true}, false) })
	b.Run("spread-ports-gro", func(b *testing.B) { benchRecvPorts(b, Config{}, true) })
}

// benchRecvPorts is BenchmarkRecv's port cases: a conn spreading over 64
// ports (no prefix) reads the 1024 mixed flows, or the 4 bulk flows as
// GSO super-datagrams, that its peer (testSender, one address and port)
// sends each to its port, as a server's answers reach a client that
// spreads over ports. With port steering (the default, where the
// process may) they all come to one socket; -unsteered reads them from
// each port's socket, with the io_uring where there is one; -nogro reads
// without GRO, as spread-batch-nogro does.
func benchRecvPorts(b *testing.B, cfg Config, bulk bool) {
	ns := benchRecvNetns(b)
	snd := newBenchSender(b, ns)
	ports := PortRange{First: 40000, Bits: 6}
	cfg.Range = Range{Ports: ports}
	cfg.Peers = []Peer{{Addr: netip.AddrPortFrom(testSender, snd.port)}}
	var c *FlowSpreadConn
	if err := ns.Do(func() (err error) {
		c, err = Listen(cfg)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	for _, pc := range c.portConns {
		setRecvBuffer(b, pc)
	}
	if bulk && !c.Stats().GRO {
		b.Skip("no UDP GRO on this kernel")
	}
	if !cfg.DisablePortSteering && !c.Stats().PortSteering {
		b.Logf("no port steering here (%v): the reader takes each port's socket in turn, as spread-ports-batch-unsteered does", c.recv.(*anyIPReceiver).steerErr)
	}
	n := benchFlows
	if bulk {
		n = benchBulkFlows
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pairs := make([]addrPair, n)
	for i := range pairs {
		pairs[i] = addrPair{src: testSender, dst: addrInPrefix(testPrefix, 1), dstPort: ports.PortOf(rng.Uint64())}
	}
	snd.prepare(b, 0, pairs, bulk)
	msgs := makeMsgs(benchBatch, 2048)
	benchLoop(b, snd, c.SetReadDeadline, func() (int, error) {
		n, err := c.ReadBatch(msgs)
		for _, m := range msgs[:n] {
			if !ports.Contains(m.OuterDst.Port()) || m.Peer != cfg.Peers[0].Addr {
				b.Fatalf("read %v -> %v as from %v, want a datagram from %v to a port of %v", m.OuterSrc, m.OuterDst, m.Peer, cfg.Peers[0].Addr, ports)
			}
		}
		return n, err
	})
	if st := c.Stats(); st.DroppedForeign != 0 {
		b.Errorf("dropped %d foreign datagrams: the benchmark's traffic is wrong", st.DroppedForeign)
	}
}

// benchRecvSpread is BenchmarkRecv's spread cases: ReadBatch of 1024
// mixed flows, or with bulk of a few GSO runs. With peers 0 the conn has
// one peer, testSender spreading over benchPeerPrefix; otherwise it has
// benchPeerList(peers) and flow i comes from peer i*benchPeerStride mod
// peers, so the 1024 flows of a round come from up to 1024 peers.
func benchRecvSpread(b *testing.B, peers int, disableGRO, bulk bool) {
	ns := benchRecvNetns(b)
	snd := newBenchSender(b, ns)
	cfg := Config{Range: Range{Prefix: testPrefix}, DisableGRO: disableGRO}
	if peers == 0 {
		cfg.Peers = []Peer{{Addr: netip.AddrPortFrom(testSender, snd.port), Range: Range{Prefix: benchPeerPrefix}, Open: true}}
	} else {
		cfg.Peers = benchPeerList(peers, snd.port)
	}
	var c *FlowSpreadConn
	if err := ns.Do(func() (err error) {
		c, err = Listen(cfg)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	setRecvBuffer(b, c.uc)
	if bulk && !c.Stats().GRO {
		b.Skip("no UDP GRO on this kernel")
	}
	pairs := spreadPairs(c, benchFlows)
	if bulk {
		pairs = spreadPairs(c, benchBulkFlows)
	}
	snd.prepare(b, uint16(c.localAddr.Port), pairs, bulk)
	runtime.GC() // Listen's garbage (much with 10,000 peers), not the reader's

	msgs := makeMsgs(benchBatch, 2048)
	checked := false
	benchLoop(b, snd, c.SetReadDeadline, func() (int, error) {
		n, err := c.ReadBatch(msgs)
		if !checked && n > 0 {
			checked = true
			checkSpread(b, c, &msgs[0])
		}
		return n, err
	})
	if st := c.Stats(); st.DroppedForeign != 0 || st.DroppedOutsideRange != 0 {
		b.Errorf("dropped %d foreign and %d outside the range: the benchmark's traffic is wrong",
			st.DroppedForeign, st.DroppedOutsideRange)
	}
}

// checkSpread fails b unless m came from a peer's range to ours and was
// read as coming from that peer: the receive path under test did its
// work.
func checkSpread(b *testing.B, c *FlowSpreadConn, m *Message) {
	b.Helper()
	for _, p := range c.peers.Load().peers {
		if p.mapper.Prefix().Contains(m.OuterSrc.Addr()) {
			if m.Peer != p.addr() || m.OuterSrc.Addr() == p.addr().Addr() || !testPrefix.Contains(m.OuterDst.Addr()) {
				b.Fatalf("read %v -> %v as from %v, want a spread datagram from %v's range", m.OuterSrc, m.OuterDst, m.Peer, p.addr())
			}
			return
		}
	}
	b.Fatalf("read %v -> %v as from %v: from no peer's prefix", m.OuterSrc, m.OuterDst, m.Peer)
}

// benchLoop reads until b.N datagrams arrived and reports their rate.
// Whenever the reader has taken all that was sent, it has snd queue the
// next round with the timer stopped, so the reader never waits for the
// sender. A datagram the kernel dropped would leave the reader waiting:
// the deadline turns that into a failure instead of a hang.
func benchLoop(b *testing.B, snd *benchSender, setDeadline func(time.Time) error, read func() (int, error)) {
	b.ReportAllocs()
	queued := 0
	var cpu time.Duration // the reader's CPU time, with the timer running
	drain := func(n int) {
		for got := 0; got < n; {
			if queued == 0 {
				b.StopTimer()
				cpu += processCPU(b)
				if err := setDeadline(time.Now().Add(10 * time.Second)); err != nil {
					b.Fatal(err)
				}
				queued = snd.fill(b)
				cpu -= processCPU(b)
				b.StartTimer()
			}
			k, err := read()
			if err != nil {
				b.Fatalf("%d datagrams of a round of %d not received: %v", queued, snd.round, err)
			}
			got += k
			queued -= k
			if queued < 0 {
				b.Fatalf("received %d datagrams more than were sent", -queued)
			}
		}
	}
	drain(snd.round) // warm-up: buffers allocated, caches warm
	b.ResetTimer()
	cpu = -processCPU(b)
	drain(b.N)
	b.StopTimer()
	cpu += processCPU(b)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time the process has used, user and system.
// On a machine shared with other work, time spent waiting for a core
// inflates ns/op but not this.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRecvNetns makes a namespace where testPrefix, benchPeerPrefix and
// the prefixes of benchPeerList (all of 2001:db8::/32) are local and
// testSender is assigned.
func benchRecvNetns(b *testing.B) *testutil.Netns {
	ns := anyIPNetns(b)
	ns.Run(b, "ip", "-6", "route", "add", "local", benchPeerPrefix.String(), "dev", "lo")
	ns.Run(b, "ip", "-6", "route", "add", "local", benchPeerSpace.String(), "dev", "lo")
	return ns
}

// setRecvBuffer gives uc an 8 MiB receive buffer, the same in every case.
func setRecvBuffer(b *testing.B, uc *net.UDPConn) {
	rc, err := uc.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var optErr error
	if err := rc.Control(func(fd uintptr) {
		// Needs CAP_NET_ADMIN, which the namespace needed already.
		optErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	}); err != nil {
		b.Fatal(err)
	}
	if optErr != nil {
		b.Fatalf("SO_RCVBUFFORCE: %v", optErr)
	}
}

// addrPair is the outer source and destination of the sender's
// datagrams, and their destination port (0: the port prepare is given).
type addrPair struct {
	src, dst netip.Addr
	dstPort  uint16
}

// plainPairs is the traffic of a tunnel that does not spread: one pair.
func plainPairs() []addrPair {
	return []addrPair{{src: testSender, dst: addrInPrefix(testPrefix, 1)}}
}

// spreadPairs returns the outer pairs of n flows with random hashes, as c's
// peers map them: flow i from the range of peer i*benchPeerStride mod
// peers to c's range.
func spreadPairs(c *FlowSpreadConn, n int) []addrPair {
	rng := rand.New(rand.NewPCG(1, 2))
	pairs := make([]addrPair, n)
	for i := range pairs {
		peer := c.peers.Load().peers[i*benchPeerStride%len(c.peers.Load().peers)].mapper
		h := rng.Uint64()
		pairs[i] = addrPair{
			src: netip.AddrFrom16(peer.Addr16(peer.Bucket(h))),
			dst: netip.AddrFrom16(c.local.Addr16(c.local.Bucket(h))),
		}
	}
	return pairs
}

// benchSender is the peer of BenchmarkRecv: a FREEBIND UDP socket on
// [::]:port that can send from any address.
type benchSender struct {
	fd    int
	port  uint16
	hdrs  []unix.Mmsghdr // of one round, built by prepare
	round int            // datagrams (GSO segments) per round
}

// newBenchSender opens the sender's socket in ns and closes it when the
// benchmark ends.
func newBenchSender(b *testing.B, ns *testutil.Netns) *benchSender {
	s := &benchSender{fd: -1}
	if err := ns.Do(func() (err error) {
		if s.fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(s.fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1); err != nil {
			return err
		}
		if err := unix.Bind(s.fd, &unix.SockaddrInet6{}); err != nil {
			return err
		}
		sa, err := unix.Getsockname(s.fd)
		if err != nil {
			return err
		}
		s.port = uint16(sa.(*unix.SockaddrInet6).Port)
		return nil
	}); err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		b.Fatalf("sender: %v", err)
	}
	b.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// prepare builds the sendmmsg(2) headers of one round to port: 1200-byte
// datagrams, one per pair, cycling over pairs, benchRoundLen in all; or
// with gso, super-datagrams of benchGSOSegs segments that carry at least
// as many. fill sends them.
func (s *benchSender) prepare(b *testing.B, port uint16, pairs []addrPair, gso bool) {
	size, n := benchSize, benchRoundLen
	if gso {
		size *= benchGSOSegs
		n = (benchRoundLen + benchGSOSegs - 1) / benchGSOSegs
		if err := unix.SetsockoptInt(s.fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT, benchSize); err != nil {
			b.Skipf("no UDP GSO on this kernel: %v", err)
		}
	}
	payload := make([]byte, size)
	s.hdrs = make([]unix.Mmsghdr, n)
	iovs := make([]unix.Iovec, n)
	names := make([]unix.RawSockaddrInet6, n)
	ctrl := make([][ctrlWords]uint64, n) // 8-byte aligned for cmsghdr
	for i := range s.hdrs {
		pr := pairs[i%len(pairs)]
		names[i].Family = unix.AF_INET6
		p := (*[2]byte)(unsafe.Pointer(&names[i].Port))
		dport := port
		if pr.dstPort != 0 {
			dport = pr.dstPort
		}
		p[0], p[1] = byte(dport>>8), byte(dport)
		names[i].Addr = pr.dst.As16()
		iovs[i].Base = &payload[0]
		iovs[i].SetLen(size)
		src := pr.src.As16()
		cb := unsafe.Slice((*byte)(unsafe.Pointer(&ctrl[i][0])), ctrlWords*8)
		h := &s.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &iovs[i]
		h.SetIovlen(1)
		h.Control = &cb[0]
		h.SetControllen(putPktinfo(cb, &src))
	}
	s.round = n * (size / benchSize)
}

// fill sends one round, benchBatch datagrams per sendmmsg(2), and returns
// how many datagrams (GSO segments) it sent. On loopback they are in the
// receiver's queue when it returns.
func (s *benchSender) fill(b *testing.B) int {
	for k := 0; k < len(s.hdrs); {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[k])),
			uintptr(min(benchBatch, len(s.hdrs)-k)), 0, 0, 0)
		if errno != 0 {
			b.Fatalf("sendmmsg: %v", errno)
		}
		k += int(n)
	}
	return s.round
}

// BenchmarkAccept measures accept alone, per datagram: the peer lookup
// and the range check of 64 datagrams from 64 flows (mixed), and of 64
// segments of one flow (a GRO run), whose verdict is reused.
func BenchmarkAccept(b *testing.B) {
	c, peer := acceptConn(b)
	pm := c.peers.Load().peers[0].mapper
	for _, tt := range []struct {
		name  string
		flows uint32
	}{
		{"mixed", 64},
		{"run", 1},
	} {
		b.Run(tt.name, func(b *testing.B) {
			msgs := make([]Message, 64)
			for i := range msgs {
				k := uint32(i) % tt.flows * 13
				msgs[i] = Message{
					N:        1200,
					OuterSrc: netip.AddrPortFrom(netip.AddrFrom16(pm.Addr16(k)), peer.Port()),
					OuterDst: netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(k)), 51821),
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if n := c.accept(msgs); n != len(msgs) {
					b.Fatalf("kept %d of %d", n, len(msgs))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/pkt")
		})
	}
}
