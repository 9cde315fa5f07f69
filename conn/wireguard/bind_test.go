package wireguard

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// message is a wireguard-go message buffer: a fixed array that the
// device reslices from the front.
type message [65535]byte

// transport fills m as wireguard-go does for a plaintext of plen bytes
// padded to a multiple of 16, and returns the datagram slice.
func transport(m *message, plen int) []byte {
	padded := (plen + 15) &^ 15
	n := transportOverhead + padded
	binary.LittleEndian.PutUint32(m[:4], messageTransportType)
	return m[:n]
}

// readOffset is where wireguard-go's TUN reads put the plaintext: after
// room for the transport header.
const readOffset = 16

func TestFlowOf(t *testing.T) {
	flow := conn.Flow{Hash: 0x0123456789abcdef, ECN: flowaddr.ECT0, Valid: true}
	const mtu = 1420
	data := func(plen int) func(m *message) []byte {
		return func(m *message) []byte { return transport(m, plen) }
	}
	tests := []struct {
		name   string
		record int // plaintext length recorded at TUN read; -1: none
		sends  []func(m *message) []byte
		want   []sendKind
	}{
		{"data matches its read", 100, []func(*message) []byte{data(100)}, []sendKind{sendSpread}},
		{"data with full-block plaintext", 96, []func(*message) []byte{data(96)}, []sendKind{sendSpread}},
		{"padding stops at the MTU", 1410, []func(*message) []byte{func(m *message) []byte {
			transport(m, 0)
			return m[:transportOverhead+mtu] // 1410 padded to 1420, not 1424
		}}, []sendKind{sendSpread}},
		{"padded past the MTU", 1410, []func(*message) []byte{data(1410)}, []sendKind{sendUnmatched}},
		{"no record", -1, []func(*message) []byte{data(100)}, []sendKind{sendUnmatched}},
		{"record of another length", 1000, []func(*message) []byte{data(100)}, []sendKind{sendUnmatched}},
		{"record of a nearby length", 100, []func(*message) []byte{data(113)}, []sendKind{sendUnmatched}},
		{"the buffer sent again", 100, []func(*message) []byte{data(100), data(100)}, []sendKind{sendSpread, sendUnmatched}},
		{"another datagram in the buffer after the send", 100, []func(*message) []byte{data(100), data(98)}, []sendKind{sendSpread, sendUnmatched}},
		{"datagram not where the header goes", 100, []func(*message) []byte{func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[8:], messageTransportType)
			return m[8 : 8+transportOverhead+112]
		}, data(100)}, []sendKind{sendUnmatched, sendSpread}},
		{"keepalive in a used buffer", 100, []func(*message) []byte{data(0), data(100)}, []sendKind{sendControl, sendUnmatched}},
		{"handshake initiation", 100, []func(*message) []byte{func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[:4], 1)
			return m[:148]
		}}, []sendKind{sendControl}},
		{"handshake response", 100, []func(*message) []byte{func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[:4], 2)
			return m[:92]
		}}, []sendKind{sendControl}},
		{"cookie reply", 100, []func(*message) []byte{func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[:4], 3)
			return m[:64]
		}}, []sendKind{sendControl}},
		{"empty", 100, []func(*message) []byte{func(m *message) []byte { return m[:0] }}, []sendKind{sendControl}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBind(conn.Config{})
			m := new(message)
			if tt.record >= 0 {
				b.recordFlow(m[:], readOffset, tt.record, flow, mtu)
			}
			for i, send := range tt.sends {
				got, kind := b.flowOf(send(m))
				if kind != tt.want[i] {
					t.Fatalf("send %d: kind = %d, want %d", i, kind, tt.want[i])
				}
				if kind == sendSpread && got != flow {
					t.Errorf("send %d: flow = %+v, want %+v", i, got, flow)
				}
				if kind != sendSpread && got != (conn.Flow{}) {
					t.Errorf("send %d: flow = %+v, want the zero (unspread) flow", i, got)
				}
			}
		})
	}
}

func TestRecordNeedsRoomToSealInPlace(t *testing.T) {
	flow := conn.Flow{Hash: 1, Valid: true}
	for _, tt := range []struct {
		name   string
		buf    []byte
		offset int
		plen   int
	}{
		{"no room for the header", make([]byte, 200), 8, 100},
		{"no room for padding and tag", make([]byte, readOffset+100), readOffset, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBind(conn.Config{})
			b.recordFlow(tt.buf, tt.offset, tt.plen, flow, 1420)
			start := max(tt.offset-readOffset, 0)
			if _, _, ok := b.flows.take(sendKey(tt.buf[start:])); ok {
				t.Errorf("a packet that cannot be sealed in place has a record")
			}
		})
	}
}

// TestSealedLen checks the padding rule against wireguard-go's, as
// device/send.go states it, at the MTUs it meets.
func TestSealedLen(t *testing.T) {
	for _, tt := range []struct{ plen, mtu, want int }{
		{0, 1420, 32},
		{1, 1420, 48},
		{16, 1420, 48},
		{100, 1420, 144},
		{1410, 1420, 32 + 1420},
		{1420, 1420, 32 + 1420},
		{100, 0, 144},
		{1434, 1417, 32 + 1417 + 32}, // a last unit of 17 bytes, padded to 32
		{2000, 1000, 32 + 2000},
	} {
		if got := sealedLen(tt.plen, tt.mtu); got != tt.want {
			t.Errorf("sealedLen(%d, %d) = %d, want %d", tt.plen, tt.mtu, got, tt.want)
		}
	}
}

func TestBufferKeySurvivesReslicing(t *testing.T) {
	m := new(message)
	k := bufferKey(m[:])
	for _, s := range [][]byte{m[16:], m[16:116], m[:32], m[100:200]} {
		if bufferKey(s) != k {
			t.Errorf("a reslice of the buffer has another key")
		}
	}
	if bufferKey(new(message)[:]) == k {
		t.Errorf("two buffers share a key")
	}
	if bufferKey(nil) != 0 {
		t.Errorf("nil has a key")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	b := NewBind(conn.Config{})
	m := new(message)
	f := conn.Flow{Hash: 1, Valid: true}
	allocs := testing.AllocsPerRun(100, func() {
		b.recordFlow(m[:], readOffset, 100, f, 1420)
		if _, kind := b.flowOf(transport(m, 100)); kind != sendSpread {
			t.Fatal("no match")
		}
		if _, kind := b.flowOf(transport(m, 100)); kind != sendUnmatched {
			t.Fatal("a consumed record matched")
		}
	})
	if allocs != 0 {
		t.Errorf("record and match allocate %v times, want 0", allocs)
	}
}

// TestStrangerEndpoints checks the cache of strangers' Endpoints: one per
// address while it lasts, bounded however many addresses send, and never
// evicting the configuration's Endpoints.
func TestStrangerEndpoints(t *testing.T) {
	b := NewBind(conn.Config{})
	peer, err := b.ParseEndpoint("[2001:db8:ff::2]:51820")
	if err != nil {
		t.Fatal(err)
	}
	roamed := netip.MustParseAddrPort("[2001:db8:ff::3]:51820")
	first := b.endpoint(roamed, false)
	if b.endpoint(roamed, false) != first {
		t.Errorf("a stranger got a new Endpoint on its second datagram")
	}
	if b.endpoint(netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), false) != b.endpoint(netip.MustParseAddrPort("192.0.2.1:1"), false) {
		t.Errorf("a v4-mapped source and its IPv4 form got different Endpoints")
	}
	// A flood of spoofed sources.
	base := netip.MustParseAddr("2001:db8:c::").As16()
	for i := range 3 * maxStrangers {
		a := base
		a[14], a[15] = byte(i>>8), byte(i)
		b.endpoint(netip.AddrPortFrom(netip.AddrFrom16(a), 1), false)
		if len(b.strangers) > maxStrangers {
			t.Fatalf("%d strangers cached, want at most %d", len(b.strangers), maxStrangers)
		}
	}
	if e, _ := b.ParseEndpoint("[2001:db8:ff::2]:51820"); e != peer {
		t.Errorf("the flood evicted a configured Endpoint")
	}
	if b.endpoint(netip.MustParseAddrPort("[2001:db8:ff::2]:51820"), false) != peer {
		t.Errorf("a datagram from a configured endpoint got another Endpoint")
	}
	// Configuring a stranger's address keeps the Endpoint wireguard-go
	// may already hold.
	if e, _ := b.ParseEndpoint(roamed.String()); e.DstToString() != roamed.String() {
		t.Errorf("ParseEndpoint(%v) = %v", roamed, e.DstToString())
	}
	if e, _ := b.ParseEndpoint(roamed.String()); e != b.endpoint(roamed, false) {
		t.Errorf("a configured address reports another Endpoint than ParseEndpoint gave")
	}
}

// BenchmarkFlowRecord measures the adapter's own cost per packet: the
// record at TUN read and the lookup that consumes it at send, over as
// many buffers as a busy device keeps in flight.
func BenchmarkFlowRecord(b *testing.B) {
	bd := NewBind(conn.Config{})
	msgs := make([]*message, 256)
	for i := range msgs {
		msgs[i] = new(message)
	}
	f := conn.Flow{Hash: 1, Valid: true}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := msgs[i%len(msgs)]
		bd.recordFlow(m[:], readOffset, 1400, f, 1420)
		if _, kind := bd.flowOf(transport(m, 1400)); kind != sendSpread {
			b.Fatal("no match")
		}
	}
}
