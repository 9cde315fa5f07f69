//go:build linux

package conn_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

const (
	benchSize  = 1200 // bytes per datagram
	benchBatch = 64   // datagrams per batch call
)

// BenchmarkSend compares sending 1200-byte datagrams from a namespace
// where prefixA is local, through a veth and the gateway behind it, to a
// sink in another namespace where the peers' prefixes are local
// (routedPeerNetns): plain sockets (the baseline) and FlowSpreadConn. The
// sink's socket is never read and takes the datagrams (the kernel drops
// them once its buffer is full), the same for every case. Each case reports packets per second and, as cpu-ns/pkt,
// the CPU time a packet took (processCPU).
//
// spread-batch/peers=N sends 1024 flows from a conn with N peers (1, 100,
// 10,000) whose prefixes have eight lengths from /48 to /96
// (conn.BenchPeerList): flow i goes to peer i*BenchPeerStride mod N, so
// a batch of 64 goes to up to 64 peers and every message looks its peer
// up. The cost per datagram should not depend on N.
//
//	go test ./conn -run '^$' -bench BenchmarkSend -benchtime 2s
func BenchmarkSend(b *testing.B) {
	ns, sinkNS := routedPeerNetns(b)
	s := newSink(b, sinkNS)
	dst := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), s.port)

	var plain *net.UDPConn
	if err := ns.Do(func() (err error) {
		plain, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { plain.Close() })
	c := listenIn(b, ns, conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: dst, Range: conn.Range{Prefix: prefixB}, Open: true}}})

	p := make([]byte, benchSize)
	rng := rand.New(rand.NewPCG(1, 2))
	flows := make([]conn.Flow, 1024)
	for i := range flows {
		flows[i] = conn.Flow{Hash: rng.Uint64(), ECN: flowaddr.ECT0, Valid: true}
	}

	b.Run("plain-writeto", func(b *testing.B) {
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			if _, err := plain.WriteToUDPAddrPort(p, dst); err != nil {
				b.Fatal(err)
			}
		}
		reportPPS(b, b.N, start)
	})

	b.Run("plain-batch", func(b *testing.B) {
		pc := ipv6.NewPacketConn(plain)
		ua := net.UDPAddrFromAddrPort(dst)
		msgs := make([]ipv6.Message, benchBatch)
		for i := range msgs {
			msgs[i] = ipv6.Message{Buffers: [][]byte{p}, Addr: ua}
		}
		b.ReportAllocs()
		start, cpu := time.Now(), processCPU(b)
		for b.Loop() {
			writeAllPlain(b, pc, msgs)
		}
		reportPPS(b, b.N*benchBatch, start)
		reportCPU(b, b.N*benchBatch, cpu)
	})

	// 1024 flows in a random order, 64 to a batch: no runs to coalesce.
	// The batches are built beforehand, as plain-batch's are, so that both
	// measure sending alone.
	b.Run("spread-batch", func(b *testing.B) {
		for _, n := range conn.BenchPeerCounts {
			b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
				peers := conn.BenchPeerList(n, s.port)
				c := listenIn(b, ns, conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: peers})
				msgs := make([]conn.Message, len(flows))
				for i, f := range rand.New(rand.NewPCG(3, 4)).Perm(len(flows)) {
					msgs[i] = conn.Message{Buf: p, Peer: peers[f*conn.BenchPeerStride%n].Addr, Flow: flows[f]}
				}
				runtime.GC() // Listen's garbage (much with 10,000 peers), not the sender's
				sendInBatches(b, c, msgs)
				if st := c.Stats(); st.SendErrors != 0 || st.SentUnspread != 0 {
					b.Errorf("%d send errors, %d datagrams sent unspread: the benchmark's traffic is wrong", st.SendErrors, st.SentUnspread)
				}
			})
		}
	})

	// The same 1024 flows, a quarter of them each Not-ECT, ECT(0),
	// ECT(1) and CE, as mixed traffic: a batch leaves from the canonical
	// socket and the two ECN sockets, a sendmmsg each.
	b.Run("spread-batch-ecn-mix", func(b *testing.B) {
		ecns := []flowaddr.ECN{flowaddr.NotECT, flowaddr.ECT0, flowaddr.ECT1, flowaddr.CE}
		msgs := make([]conn.Message, len(flows))
		for i, f := range rand.New(rand.NewPCG(3, 4)).Perm(len(flows)) {
			fl := flows[f]
			fl.ECN = ecns[f%4]
			msgs[i] = conn.Message{Buf: p, Peer: dst, Flow: fl}
		}
		sendInBatches(b, c, msgs)
	})

	// Four bulk flows, each in a run of 16 per batch, as a VPN reading
	// its TUN in batches sees bulk transfers: every run is one GSO send.
	b.Run("spread-gso", func(b *testing.B) {
		if !c.Stats().GSO {
			b.Skip("no UDP GSO on this kernel")
		}
		msgs := make([]conn.Message, benchBatch)
		for i := range msgs {
			msgs[i] = conn.Message{Buf: p, Peer: dst, Flow: flows[i/16]}
		}
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			writeAllSpread(b, c, msgs)
		}
		reportPPS(b, b.N*benchBatch, start)
	})

	// Spreading over source ports: the same 1024 flows in a random order
	// and the same four bulk runs, from a conn with 64 ports and no
	// prefix to the peer's one address and port, as a client on IPv4 or
	// behind a NAT sends. Each datagram leaves from its port's socket.
	ports := listenIn(b, ns, conn.Config{Range: conn.Range{Ports: conn.PortRange{First: 40000, Bits: 6}}, Peers: []conn.Peer{{Addr: dst}}})
	b.Run("spread-ports-batch", func(b *testing.B) {
		msgs := make([]conn.Message, len(flows))
		for i, f := range rand.New(rand.NewPCG(3, 4)).Perm(len(flows)) {
			msgs[i] = conn.Message{Buf: p, Peer: dst, Flow: flows[f]}
		}
		sendInBatches(b, ports, msgs)
	})
	b.Run("spread-ports-gso", func(b *testing.B) {
		if !ports.Stats().GSO {
			b.Skip("no UDP GSO on this kernel")
		}
		msgs := make([]conn.Message, benchBatch)
		for i := range msgs {
			msgs[i] = conn.Message{Buf: p, Peer: dst, Flow: flows[i/16]}
		}
		b.ReportAllocs()
		start, cpu := time.Now(), processCPU(b)
		for b.Loop() {
			writeAllSpread(b, ports, msgs)
		}
		reportPPS(b, b.N*benchBatch, start)
		reportCPU(b, b.N*benchBatch, cpu)
	})
	if st := ports.Stats(); st.SendErrors != 0 || st.SentUnspread != 0 {
		b.Errorf("ports: %d send errors, %d datagrams sent unspread: the benchmark's traffic is wrong", st.SendErrors, st.SentUnspread)
	}

	if st := c.Stats(); st.SendErrors != 0 || !st.GSO && c.Stats().GSOSends > 0 {
		b.Errorf("SendErrors %d, GSO %v after %d GSO sends", st.SendErrors, st.GSO, st.GSOSends)
	}
}

// sendInBatches times sending msgs from c, benchBatch at a time, round
// and round, and reports packets per second and CPU per packet.
func sendInBatches(b *testing.B, c *conn.FlowSpreadConn, msgs []conn.Message) {
	b.ReportAllocs()
	start, cpu := time.Now(), processCPU(b)
	k := 0
	for b.Loop() {
		writeAllSpread(b, c, msgs[k:k+benchBatch])
		k = (k + benchBatch) % len(msgs)
	}
	reportPPS(b, b.N*benchBatch, start)
	reportCPU(b, b.N*benchBatch, cpu)
}

func writeAllPlain(b *testing.B, pc *ipv6.PacketConn, msgs []ipv6.Message) {
	for sent := 0; sent < len(msgs); {
		n, err := pc.WriteBatch(msgs[sent:], 0)
		if err != nil {
			b.Fatal(err)
		}
		sent += n
	}
}

func writeAllSpread(b *testing.B, c *conn.FlowSpreadConn, msgs []conn.Message) {
	if n, err := c.WriteBatch(msgs); err != nil || n != len(msgs) {
		b.Fatalf("WriteBatch = %d, %v", n, err)
	}
}

func reportPPS(b *testing.B, packets int, start time.Time) {
	b.ReportMetric(float64(packets)/time.Since(start).Seconds(), "pkts/s")
}

// reportCPU reports the CPU time per packet since start, a processCPU
// reading.
func reportCPU(b *testing.B, packets int, start time.Duration) {
	b.ReportMetric(float64((processCPU(b)-start).Nanoseconds())/float64(packets), "cpu-ns/pkt")
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

// routedPeerNetns is BenchmarkSend's network: the sender's namespace, where
// prefixA is local, and the sink's, where every peer's prefix
// (conn.BenchPeerSpace) is, joined by a veth through which the sender
// routes the peers' prefixes, as a host reaches a real peer through its
// gateway. The sender's kernel keeps one neighbour entry, the gateway's,
// however many destination addresses the peers' ranges give; with the
// peers' prefixes local on the sender's loopback it kept one per address.
func routedPeerNetns(b *testing.B) (sender, sink *testutil.Netns) {
	b.Helper()
	const senderLink, gateway = "2001:db8:ff:1::2", "2001:db8:ff:1::1"
	sender, sink = loopbackNetns(b, prefixA), loopbackNetns(b, conn.BenchPeerSpace)
	testutil.Veth(b, sender, "send0", sink, "sink0")
	sender.Run(b, "ip", "addr", "add", senderLink+"/64", "dev", "send0", "nodad")
	sink.Run(b, "ip", "addr", "add", gateway+"/64", "dev", "sink0", "nodad")
	sender.Run(b, "ip", "-6", "route", "add", conn.BenchPeerSpace.String(), "via", gateway)
	// A static entry: the first datagrams need not wait for neighbour
	// discovery.
	staticNeighbor(b, sender, "send0", sink, "sink0", netip.MustParseAddr(gateway))
	return sender, sink
}
