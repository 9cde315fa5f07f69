package wireguard

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// TestTunnelWirePairs checks, datagram by datagram on the wire, that each
// transport-data datagram A sends leaves either on the canonical pair
// (while its flow's spread pair is not known open) or on exactly the
// outer address pair of the inner packet it carries, with that packet's
// outer ECN, through the real wireguard-go, and never on another flow's
// pair; that the flows do move to their spread pairs once B's answers
// arrived on them; and that A counts no unmatched data, on send or
// receive. A wireguard-go that stopped sealing a packet in the buffer its
// TUN read filled would send it unspread (or, with stale records, on
// another flow's pair); one that stopped decrypting in place would leave
// Observe unfed and the flows on the canonical pair. Either fails it.
//
// The inner packet of a datagram is encrypted, so the test correlates by
// the transport header's counter, which is sent in clear: wireguard-go
// numbers the messages of a keypair in the order it stages them, and with
// one TUN reader and one peer that is the order the TUN returned the
// packets, which is the order this test wrote them to the channel TUN.
// Keepalives take counters too but are 32 bytes long and skipped; no
// other data is sent. A probe copy repeats its datagram's counter. So the
// k-th distinct data counter on the wire carries the k-th packet written,
// without trusting the adapter's own matching.
//
// The test runs in rounds: A sends one packet per flow, all of one size,
// in one TUN batch (different flows of similar lengths in neighbouring
// buffers), and B answers each flow. In the first round A has learned
// nothing: each datagram goes on the canonical pair with a probe copy on
// its spread pair just before it. The veth keeps their order, so B's
// wireguard-go delivers the probe and drops the canonical copy as a
// replay; B observes the flow on its spread pair and answers there, and
// A learns the pair from that answer. From the second round on, every
// datagram goes on its spread pair. A final burst of one flow makes GSO
// runs on the wire, which the capture splits by the segment size.
func TestTunnelWirePairs(t *testing.T) {
	var in *batchTUN
	a, b := newTunnel(t, func(d tun.Device, _ *Bind) tun.Device {
		w := d.(*tunDevice)
		in = newBatchTUN(w.Device)
		w.Device = in
		return w
	})
	in.send(innerUDP(innerA, innerB, 1, 9000, flowaddr.ECT0, "warm-up"))
	b.receive(t, 1)
	// The warm-up's probe copy delivered it; its canonical twin may still
	// be on its way, and must not reach the capture.
	testutil.WaitFor(t, "B to have read all that A sent", func() bool {
		sa := a.bind.Conn().Stats()
		return b.bind.Conn().Stats().Received >= sa.Sent+sa.SentProbes
	})
	capture := startWireCapture(t, b.ns, "wb")

	c := a.bind.Conn()
	ma, mb := testMapper(t, prefixA), testMapper(t, prefixB)
	flows := distinctFlows(t, c, ma, mb)
	var sent [][]byte
	round := map[int]int{} // packet index -> round
	const rounds = 12
	for r := range rounds {
		var ps [][]byte
		for _, f := range flows {
			round[len(sent)] = r
			p := f.packet(40 + 37*r)
			ps = append(ps, p)
			sent = append(sent, p)
		}
		for _, p := range ps {
			in.send(p)
		}
		expectPackets(t, b, ps)
		for _, f := range flows {
			b.send(f.reply(20 + r))
		}
		a.receive(t, len(flows))
	}
	tcp := flows[len(flows)-1]
	var burst [][]byte
	for range 24 {
		round[len(sent)] = rounds
		p := tcp.packet(1300)
		burst = append(burst, p)
		sent = append(sent, p)
	}
	for _, p := range burst {
		in.send(p)
	}
	expectPackets(t, b, burst)

	msgs, gso := capture.stop(t, len(sent))
	slices.SortStableFunc(msgs, func(x, y wireMsg) int { return int(x.counter - y.counter) })
	canonical := sinkArrival{src: linkA.Addr(), dst: linkB.Addr()}
	var onCanonical, onSpread, copies, lateCanonical, wrong int
	i := -1 // the packet of the current counter
	for k, m := range msgs {
		if m.receiver != msgs[0].receiver {
			t.Fatalf("datagrams for two receiver indices: a rekey during the test")
		}
		first := k == 0 || m.counter != msgs[k-1].counter
		if first {
			i++
		}
		if i >= len(sent) {
			t.Fatalf("%d distinct data counters on the wire, want %d", i+1, len(sent))
		}
		f := c.Classify(sent[i])
		if !f.Valid {
			t.Fatalf("packet %d does not classify", i)
		}
		spread := sinkArrival{ma.Addr(f.Hash), mb.Addr(f.Hash), f.ECN}
		canonical.ecn = f.ECN
		if !first {
			copies++ // a probe and its canonical datagram share a counter
		}
		switch {
		case m.outer == spread:
			onSpread++
		case m.outer == canonical:
			onCanonical++
			if round[i] > 0 {
				lateCanonical++
			}
		default:
			if wrong++; wrong <= 5 {
				t.Errorf("datagram with counter %d (packet %d, round %d) went out as %v, want %v or the canonical %v",
					m.counter, i, round[i], m.outer, spread, canonical)
			}
		}
	}
	sa, sb := a.bind.Stats(), b.bind.Stats()
	t.Logf("%d data datagrams on the wire for %d packets: %d on the canonical pair, %d on spread pairs (%d of them probe copies), %d in GSO runs; TUN reads of up to %d packets",
		len(msgs), len(sent), onCanonical, onSpread, copies, gso, in.maxBatch.Load())
	t.Logf("A bind %+v, conn %+v\nB bind %+v", sa, pathStats(c), sb)
	if i+1 != len(sent) {
		t.Fatalf("%d distinct data counters on the wire, want %d", i+1, len(sent))
	}
	if wrong > 0 {
		t.Errorf("%d of %d datagrams on a pair that is neither the canonical one nor their flow's", wrong, len(msgs))
	}
	if lateCanonical > 0 {
		t.Errorf("%d datagrams after the first round trip on the canonical pair, want every one on its flow's pair", lateCanonical)
	}
	if onSpread-copies < len(sent)-len(flows) {
		t.Errorf("%d datagrams on spread pairs, %d of them probe copies; want all but the first round's %d packets there", onSpread, copies, len(flows))
	}
	if sa.SentUnmatched != 0 || sa.SentSpread != uint64(len(sent))+1 {
		t.Errorf("A sent %d unmatched and %d spread data datagrams, want 0 and %d", sa.SentUnmatched, sa.SentSpread, len(sent)+1)
	}
	for _, e := range []struct {
		name string
		s    Stats
		want int
	}{{"A", sa, rounds * len(flows)}, {"B", sb, len(sent) + 1}} {
		if e.s.RecvUnmatched != 0 || e.s.Observed != uint64(e.want) {
			t.Errorf("%s observed %d data packets and wrote %d unmatched, want %d and 0", e.name, e.s.Observed, e.s.RecvUnmatched, e.want)
		}
	}
}

// pathStats is the part of a conn's Stats about paths.
func pathStats(c *conn.FlowSpreadConn) string {
	s := c.Stats()
	return fmt.Sprintf("{SentWaiting:%d SentProbes:%d PathsOpened:%d}", s.SentWaiting, s.SentProbes, s.PathsOpened)
}

// expectPackets waits until e's TUN delivered exactly ps, in order.
// expectPackets checks that e's TUN puts out the packets ps, each once,
// and those of one flow in the order sent. Packets of different flows may
// come in another order: a batch goes out socket by socket, and ECT(0)
// flows leave from a socket of their own.
func expectPackets(t *testing.T, e *end, ps [][]byte) {
	t.Helper()
	got := e.receive(t, len(ps))
	used := make([]bool, len(ps))
	last := map[uint64]int{} // flow hash -> index in ps of its latest packet
	for k, p := range got {
		i := slices.IndexFunc(ps, func(q []byte) bool { return bytes.Equal(p, q) })
		for i >= 0 && used[i] { // a packet sent twice: the next copy
			j := slices.IndexFunc(ps[i+1:], func(q []byte) bool { return bytes.Equal(p, q) })
			if j < 0 {
				i = -1
				break
			}
			i += 1 + j
		}
		if i < 0 {
			t.Fatalf("%s's packet %d is none of those sent, or one already put out", e.ns.Name, k)
		}
		used[i] = true
		f := e.bind.Conn().Classify(p)
		if j, seen := last[f.Hash]; seen && j > i {
			t.Fatalf("%s put out packet %d of a flow after its packet %d", e.ns.Name, j, i)
		}
		last[f.Hash] = i
	}
}

// batchTUN is a TUN whose Read returns every packet queued by send, up
// to the batch, in order; its other methods are the wrapped device's.
type batchTUN struct {
	tun.Device
	queue    chan []byte
	closed   chan struct{}
	once     sync.Once
	maxBatch atomic.Int32
}

func newBatchTUN(d tun.Device) *batchTUN {
	return &batchTUN{Device: d, queue: make(chan []byte, 1024), closed: make(chan struct{})}
}

func (t *batchTUN) send(p []byte) { t.queue <- p }

func (t *batchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-t.queue:
		sizes[0] = copy(bufs[0][offset:], p)
	case <-t.closed:
		return 0, os.ErrClosed
	}
	n := 1
	for ; n < len(bufs); n++ {
		select {
		case p := <-t.queue:
			sizes[n] = copy(bufs[n][offset:], p)
			continue
		default:
		}
		break
	}
	if int32(n) > t.maxBatch.Load() {
		t.maxBatch.Store(int32(n))
	}
	return n, nil
}

func (t *batchTUN) BatchSize() int { return batchSize }

func (t *batchTUN) Close() error {
	t.once.Do(func() { close(t.closed) })
	return t.Device.Close()
}

// innerFlow is one inner 5-tuple of the test, with its ECN codepoint.
type innerFlow struct {
	tcp   bool
	sport uint16
	ecn   flowaddr.ECN
}

func (f innerFlow) packet(payload int) []byte {
	ip := testutil.IPv4(innerA, innerB)
	ip.TOS = uint8(f.ecn)
	body := gopacket.Payload(bytes.Repeat([]byte{byte(f.sport)}, payload))
	if f.tcp {
		return testutil.Build(ip, testutil.TCP(f.sport, 9000), body)
	}
	return testutil.Build(ip, testutil.UDP(f.sport, 9000), body)
}

// reply is a packet of the same inner flow, from B back to A.
func (f innerFlow) reply(payload int) []byte {
	ip := testutil.IPv4(innerB, innerA)
	ip.TOS = uint8(f.ecn)
	body := gopacket.Payload(bytes.Repeat([]byte{byte(f.sport)}, payload))
	if f.tcp {
		return testutil.Build(ip, testutil.TCP(9000, f.sport), body)
	}
	return testutil.Build(ip, testutil.UDP(9000, f.sport), body)
}

// distinctFlows returns five UDP flows and a TCP flow (last) whose outer
// address pairs all differ, so a datagram on another flow's pair shows,
// with ECN codepoints that differ between neighbours.
func distinctFlows(t *testing.T, c *conn.FlowSpreadConn, ma, mb *flowaddr.Mapper) []innerFlow {
	t.Helper()
	ecns := []flowaddr.ECN{flowaddr.NotECT, flowaddr.ECT0, flowaddr.ECT1}
	used := map[[2]netip.Addr]bool{}
	var flows []innerFlow
	for port := uint16(41000); len(flows) < 6; port++ {
		f := innerFlow{tcp: len(flows) == 5, sport: port, ecn: ecns[len(flows)%len(ecns)]}
		h := c.Classify(f.packet(0)).Hash
		pair := [2]netip.Addr{ma.Addr(h), mb.Addr(h)}
		if !used[pair] {
			used[pair] = true
			flows = append(flows, f)
		}
	}
	return flows
}

// wireMsg is a WireGuard transport-data message seen on the wire.
type wireMsg struct {
	receiver uint32
	counter  uint64
	outer    sinkArrival
}

// wireCapture reads the frames arriving on an interface with AF_PACKET:
// a view of the wire independent of the adapter and of wireguard-go.
type wireCapture struct {
	fd      int
	done    chan struct{}
	stopped atomic.Bool
	mu      sync.Mutex
	msgs    []wireMsg
	gso     int
	bad     error
}

func startWireCapture(t *testing.T, ns *testutil.Netns, iface string) *wireCapture {
	t.Helper()
	c := &wireCapture{done: make(chan struct{})}
	// A socket for one protocol sees only incoming frames: A's datagrams.
	// The conn sends runs of one flow as one GSO datagram, which crosses
	// the veth whole; the virtio header gives its segment size.
	fd, err := openPacketSocket(ns, iface, unix.SOCK_RAW, unix.ETH_P_IPV6, true)
	if err != nil {
		t.Fatalf("capture on %s: %v", iface, err)
	}
	c.fd = fd
	go c.run()
	t.Cleanup(func() { c.stopped.Store(true); <-c.done; unix.Close(c.fd) })
	return c
}

func (c *wireCapture) run() {
	defer close(c.done)
	buf := make([]byte, 1<<17)
	for !c.stopped.Load() {
		n, err := unix.Read(c.fd, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		c.mu.Lock()
		if err != nil {
			c.bad = fmt.Errorf("capture read: %w", err)
		} else {
			c.frame(buf[:n])
		}
		c.mu.Unlock()
	}
}

// virtioHdrLen is the size of struct virtio_net_hdr, which
// PACKET_VNET_HDR puts before each frame: flags, gso_type, hdr_len,
// gso_size, csum_start and csum_offset, in host order.
const virtioHdrLen = 10

// frame collects the WireGuard transport-data messages in one frame: an
// Ethernet frame carrying IPv6 and UDP, from A's port to B's, whose
// payload is one datagram or a GSO run of datagrams of gso_size bytes
// (the last maybe shorter).
func (c *wireCapture) frame(f []byte) {
	if len(f) < virtioHdrLen {
		return
	}
	segment := int(binary.NativeEndian.Uint16(f[4:6]))
	pkt := gopacket.NewPacket(f[virtioHdrLen:], layers.LayerTypeEthernet, gopacket.NoCopy)
	ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	udp, _ := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil || uint16(udp.SrcPort) != linkA.Port() || uint16(udp.DstPort) != linkB.Port() {
		return
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP)
	dst, _ := netip.AddrFromSlice(ip.DstIP)
	outer := sinkArrival{src, dst, flowaddr.ECN(ip.TrafficClass & 3)}
	payload := udp.Payload
	if segment == 0 || segment > len(payload) {
		segment = len(payload)
	} else if segment < len(payload) {
		c.gso += (len(payload) + segment - 1) / segment
	}
	for len(payload) > 0 {
		m := payload[:min(segment, len(payload))]
		payload = payload[len(m):]
		if len(m) <= transportOverhead || binary.LittleEndian.Uint32(m) != messageTransportType {
			continue // handshakes, cookie replies and keepalives
		}
		c.msgs = append(c.msgs, wireMsg{
			receiver: binary.LittleEndian.Uint32(m[4:8]),
			counter:  binary.LittleEndian.Uint64(m[8:16]),
			outer:    outer,
		})
	}
}

// stop waits until want data messages were captured (the capture may
// trail B's delivery by a moment), or a few seconds, then ends the
// capture and returns them and how many arrived in GSO runs.
func (c *wireCapture) stop(t *testing.T, want int) ([]wireMsg, int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c.mu.Lock()
		n := len(c.msgs)
		c.mu.Unlock()
		if n >= want {
			break
		}
	}
	c.stopped.Store(true)
	<-c.done
	if c.bad != nil {
		t.Fatal(c.bad)
	}
	if st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err != nil || st.Drops != 0 {
		t.Fatalf("capture statistics %+v, %v: frames were dropped", st, err)
	}
	return c.msgs, c.gso
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketSocket opens an AF_PACKET socket of type typ for protocol
// proto on iface in ns, with room for bursts and a 50 ms receive timeout
// that lets its reader see a stop; with vnetHdr each frame starts with a
// virtio header (PACKET_VNET_HDR).
func openPacketSocket(ns *testutil.Netns, iface string, typ int, proto uint16, vnetHdr bool) (int, error) {
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, typ|unix.SOCK_CLOEXEC, int(htons(proto))); err != nil {
			return fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW): %w", err)
		}
		if vnetHdr {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				return fmt.Errorf("PACKET_VNET_HDR: %w", err)
			}
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 50_000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifi.Index})
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
	}
	return fd, err
}
