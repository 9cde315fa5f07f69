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

func TestFlowOf(t *testing.T) {
	flow := conn.Flow{Hash: 0x0123456789abcdef, ECN: flowaddr.ECT0, Valid: true}
	tests := []struct {
		name   string
		record int // plaintext length recorded at TUN read; -1: none
		send   func(m *message) []byte
		want   sendKind
	}{
		{"data matches its read", 100, func(m *message) []byte { return transport(m, 100) }, sendSpread},
		{"data with full-block plaintext", 96, func(m *message) []byte { return transport(m, 96) }, sendSpread},
		{"no record", -1, func(m *message) []byte { return transport(m, 100) }, sendUnmatched},
		{"stale record of another length", 1000, func(m *message) []byte { return transport(m, 100) }, sendUnmatched},
		{"keepalive in a used buffer", 100, func(m *message) []byte { return transport(m, 0) }, sendControl},
		{"handshake initiation", 100, func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[:4], 1)
			return m[:148]
		}, sendControl},
		{"handshake response", 100, func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[:4], 2)
			return m[:92]
		}, sendControl},
		{"cookie reply", 100, func(m *message) []byte {
			binary.LittleEndian.PutUint32(m[:4], 3)
			return m[:64]
		}, sendControl},
		{"empty", 100, func(m *message) []byte { return m[:0] }, sendControl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBind(conn.Config{})
			m := new(message)
			if tt.record >= 0 {
				// The TUN read sees the buffer from offset 16.
				b.recordFlow(m[16:], flow, tt.record)
			}
			got, kind := b.flowOf(tt.send(m))
			if kind != tt.want {
				t.Fatalf("kind = %d, want %d", kind, tt.want)
			}
			if kind == sendSpread && got != flow {
				t.Errorf("flow = %+v, want %+v", got, flow)
			}
			if kind != sendSpread && got != (conn.Flow{}) {
				t.Errorf("flow = %+v, want the zero (unspread) flow", got)
			}
		})
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

func TestOuterECN(t *testing.T) {
	tests := []struct {
		name     string
		datagram int // recorded ciphertext length; 0: none
		plen     int // decrypted, trimmed plaintext
		ok       bool
	}{
		{"exact", transportOverhead + 96, 96, true},
		{"trimmed padding", transportOverhead + 112, 100, true},
		{"longer than the datagram", transportOverhead + 96, 100, false},
		{"far shorter: another datagram", transportOverhead + 1024, 100, false},
		{"no record", 0, 100, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBind(conn.Config{})
			m := new(message)
			if tt.datagram > 0 {
				b.ecns.store(bufferKey(m[:]), 0, uint32(tt.datagram)<<8|uint32(flowaddr.CE)<<1|1)
			}
			ecn, ok := b.outerECN(m[:16+tt.plen], tt.plen)
			if ok != tt.ok || (ok && ecn != flowaddr.CE) {
				t.Errorf("outerECN = %v, %v; want CE, %v", ecn, ok, tt.ok)
			}
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	b := NewBind(conn.Config{})
	m := new(message)
	f := conn.Flow{Hash: 1, Valid: true}
	allocs := testing.AllocsPerRun(100, func() {
		b.recordFlow(m[16:], f, 100)
		if _, kind := b.flowOf(transport(m, 100)); kind != sendSpread {
			t.Fatal("no match")
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
