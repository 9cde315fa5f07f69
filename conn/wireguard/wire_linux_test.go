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
// transport-data datagram A sends leaves on the outer address pair and
// with the outer ECN of the inner packet it carries, through the real
// wireguard-go, and that A counts no unmatched data. A wireguard-go that
// stopped sealing a packet in the buffer its TUN read filled would send
// it unspread (or, with stale records, on another flow's pair) and fail.
//
// The inner packet of a datagram is encrypted, so the test correlates by
// the transport header's counter, which is sent in clear: wireguard-go
// numbers the messages of a keypair in the order it stages them, and with
// one TUN reader and one peer that is the order the TUN returned the
// packets, which is the order this test wrote them to the channel TUN.
// Keepalives take counters too but are 32 bytes long and skipped; no
// other data is sent. So the k-th data counter on the wire carries the
// k-th packet written, without trusting the adapter's own matching.
//
// A's TUN returns the packets in batches, as a busy TUN does, so one
// Send carries many records. Rounds of one packet per flow, all of one
// size, put different flows of similar lengths in neighbouring buffers; a
// burst of one flow makes GSO runs on the wire, which the capture splits
// by the kernel's segment size.
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
	capture := startWireCapture(t, b.ns, "wb")

	c := a.bind.Conn()
	ma, mb := testMapper(t, prefixA), testMapper(t, prefixB)
	flows := distinctFlows(t, c, ma, mb)
	var sent [][]byte
	for r := range 12 {
		for _, f := range flows {
			sent = append(sent, f.packet(40+37*r))
		}
	}
	tcp := flows[len(flows)-1]
	for range 24 {
		sent = append(sent, tcp.packet(1300))
	}

	got := make(chan [][]byte, 1)
	go func() {
		var ps [][]byte
		timeout := time.After(30 * time.Second)
		for len(ps) < len(sent) {
			select {
			case p := <-b.tun.Inbound:
				ps = append(ps, p)
			case <-timeout:
				got <- ps
				return
			}
		}
		got <- ps
	}()
	for _, p := range sent {
		in.send(p)
	}
	received := <-got
	if len(received) != len(sent) {
		t.Fatalf("B received %d of %d packets; A stats %+v", len(received), len(sent), a.bind.Stats())
	}
	for i, p := range received {
		if !bytes.Equal(p, sent[i]) {
			t.Fatalf("B's packet %d differs from the one A sent", i)
		}
	}

	msgs, gso := capture.stop(t, len(sent))
	t.Logf("%d data datagrams on the wire, %d of them in GSO runs; TUN reads of up to %d packets; A bind %+v",
		len(msgs), gso, in.maxBatch.Load(), a.bind.Stats())
	if len(msgs) != len(sent) {
		t.Fatalf("captured %d data datagrams from A, want %d", len(msgs), len(sent))
	}
	slices.SortFunc(msgs, func(x, y wireMsg) int { return int(x.counter - y.counter) })
	wrong := 0
	for i, m := range msgs {
		if m.receiver != msgs[0].receiver {
			t.Fatalf("datagrams for two receiver indices: a rekey during the test")
		}
		f := c.Classify(sent[i])
		if !f.Valid {
			t.Fatalf("packet %d does not classify", i)
		}
		want := sinkArrival{ma.Addr(f.Hash), mb.Addr(f.Hash), f.ECN}
		if m.outer != want {
			if wrong++; wrong <= 5 {
				t.Errorf("datagram with counter %d (packet %d, %d bytes) went out as %v, want %v", m.counter, i, len(sent[i]), m.outer, want)
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d datagrams on the wrong outer pair or ECN", wrong, len(msgs))
	}
	if s := a.bind.Stats(); s.SentUnmatched != 0 || s.SentSpread != uint64(len(sent))+1 {
		t.Errorf("A sent %d unmatched and %d spread data datagrams, want 0 and %d", s.SentUnmatched, s.SentSpread, len(sent)+1)
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
	proto := htons(unix.ETH_P_IPV6)
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW): %w", err)
		}
		c.fd = fd
		// The conn sends runs of one flow as one GSO datagram, which
		// crosses the veth whole; the virtio header gives its segment
		// size.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 50_000} // lets the reader see stop
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		if c.fd > 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture on %s: %v", iface, err)
	}
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
