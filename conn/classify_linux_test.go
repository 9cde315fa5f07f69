package conn_test

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
)

// udp6Packet builds an IPv6/UDP packet with a small payload.
func udp6Packet(t testing.TB, src, dst string, sport, dport uint16) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 64,
		SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, udp, gopacket.Payload("payload"))
}

// tcp4Packet builds an IPv4/TCP packet with the given ECN codepoint.
func tcp4Packet(t testing.TB, src, dst string, sport, dport uint16, ecn flowaddr.ECN) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, TOS: uint8(ecn),
		SrcIP: net.ParseIP(src).To4(), DstIP: net.ParseIP(dst).To4()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true, Window: 1000}
	tcp.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, tcp, gopacket.Payload("payload"))
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// classifier opens a conn that is only used to classify, on the loopback
// of a fresh namespace.
func classifier(t *testing.T, cfg conn.Config) *conn.FlowSpreadConn {
	t.Helper()
	ns := loopbackNetns(t)
	cfg.Range.Prefix = prefixA
	cfg.Peers = []conn.Peer{{Addr: netip.MustParseAddrPort("[2001:db8:b::1]:51820"), Range: conn.Range{Prefix: prefixB}, Open: true}}
	return listenIn(t, ns, cfg)
}

var testKey = hash.Key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func TestClassify(t *testing.T) {
	sip := hash.NewSipHash24(testKey)
	want := func(pkt []byte, symmetric bool) uint64 {
		k, err := flowaddr.Parse(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if symmetric {
			k = k.Canonical()
		}
		return sip.Sum64(k.Bytes())
	}
	v6 := udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", 40000, 53)
	v6reply := udp6Packet(t, "2001:db8:2::2", "2001:db8:1::1", 53, 40000)
	v4 := tcp4Packet(t, "192.0.2.1", "192.0.2.2", 40000, 443, flowaddr.ECT0)
	v4ce := tcp4Packet(t, "192.0.2.1", "192.0.2.2", 40000, 443, flowaddr.CE)

	for _, symmetric := range []bool{false, true} {
		c := classifier(t, conn.Config{Key: testKey, Symmetric: symmetric})
		tests := []struct {
			name string
			pkt  []byte
			want conn.Flow
		}{
			{"IPv6 UDP", v6, conn.Flow{Hash: want(v6, symmetric), Valid: true}},
			{"IPv6 UDP reply", v6reply, conn.Flow{Hash: want(v6reply, symmetric), Valid: true}},
			{"IPv4 TCP ECT(0)", v4, conn.Flow{Hash: want(v4, symmetric), ECN: flowaddr.OuterECN(flowaddr.ECT0), Valid: true}},
			{"IPv4 TCP CE", v4ce, conn.Flow{Hash: want(v4, symmetric), ECN: flowaddr.OuterECN(flowaddr.CE), Valid: true}},
			{"empty", nil, conn.Flow{}},
			{"garbage", []byte{0xff, 0x00, 0x12}, conn.Flow{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := c.Classify(tt.pkt); got != tt.want {
					t.Errorf("Symmetric %v: Classify = %+v, want %+v", symmetric, got, tt.want)
				}
			})
		}
		fwd, rev := c.Classify(v6), c.Classify(v6reply)
		if symmetric && fwd.Hash != rev.Hash {
			t.Errorf("Symmetric: request hash %#x != reply hash %#x", fwd.Hash, rev.Hash)
		}
		if !symmetric && fwd.Hash == rev.Hash {
			t.Errorf("not Symmetric: request and reply hash alike (%#x)", fwd.Hash)
		}
	}
}

// recordingPolicy hashes to a constant and records the clock it was given.
type recordingPolicy struct {
	calls atomic.Int64
	now   atomic.Int64
}

func (p *recordingPolicy) FlowHash(in hash.Input, now int64) uint64 {
	p.calls.Add(1)
	p.now.Store(now)
	return uint64(in[37]) + 1000 // the key's Flags, offset: not a hash anyone would compute
}

func TestClassifyPolicy(t *testing.T) {
	p := &recordingPolicy{}
	c := classifier(t, conn.Config{Policy: p})
	before := time.Now()
	f := c.Classify(udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", 1, 2))
	after := time.Now()
	if !f.Valid || f.Hash != 1000 || p.calls.Load() != 1 {
		t.Fatalf("Classify = %+v after %d policy calls; want the policy's hash 1000 from one call", f, p.calls.Load())
	}
	// A policy other than hash.Static sees the clock of each packet.
	now := time.Unix(0, p.now.Load())
	if now.After(after) || now.Before(before) {
		t.Errorf("policy saw now = %v, want between %v and %v", now, before, after)
	}
	time.Sleep(5 * time.Millisecond)
	before = time.Now()
	c.Classify(udp6Packet(t, "2001:db8:1::1", "2001:db8:2::2", 1, 2))
	if now2 := time.Unix(0, p.now.Load()); now2.Before(before) {
		t.Errorf("second Classify: policy saw now = %v, a clock older than the call (%v)", now2, before)
	}
}
