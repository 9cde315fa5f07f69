package conn

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/ip4defrag"
	"github.com/google/gopacket/layers"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// udpDatagram builds, with gopacket, the fragmentable part (UDP header
// and payload, checksum computed) of a datagram from peerAddr to
// inPrefix on testPort.
func udpDatagram(t testing.TB, payload []byte) []byte {
	t.Helper()
	pkt := testutil.Build(testutil.IPv6(peerAddr, inPrefix), testutil.UDP(4000, testPort), gopacket.Payload(payload))
	return pkt[ipv6HeaderLen:]
}

// fragment is one fragment of a datagram as the raw receiver reads it.
type fragment struct {
	head     [rawHeadLen]byte
	data     []byte
	captured int
}

// makeFragment builds with gopacket the IPv6 packet carrying whole[off:end]
// as a fragment of datagram id, and splits it the way the raw receiver
// reads it.
func makeFragment(t testing.TB, id uint32, whole []byte, off, end int, more bool, ecn flowaddr.ECN) fragment {
	t.Helper()
	ip := testutil.IPv6(peerAddr, inPrefix)
	ip.TrafficClass = uint8(ecn)
	fh := testutil.Fragment(uint16(off/8), more, id)
	fh.NextHeader = layers.IPProtocolUDP
	pkt := testutil.Build(ip, fh, gopacket.Payload(whole[off:end]))
	var f fragment
	copy(f.head[:], pkt)
	f.data = bytes.Clone(pkt[rawHeadLen:])
	f.captured = len(pkt)
	return f
}

// cut splits whole into fragments at the offsets given (multiples of 8,
// increasing, inside whole).
func cut(t testing.TB, id uint32, whole []byte, at ...int) []fragment {
	t.Helper()
	var fs []fragment
	off := 0
	for _, end := range append(at, len(whole)) {
		fs = append(fs, makeFragment(t, id, whole, off, end, end < len(whole), flowaddr.ECT0))
		off = end
	}
	return fs
}

func (r *reassembler) feed(t testing.TB, f fragment, now time.Duration) ([]byte, flowaddr.ECN, fragVerdict) {
	t.Helper()
	got, ecn, v := r.add(&f.head, f.data, f.captured, now)
	if e, b := r.held(); e > len(r.entries) || b > len(r.entries)*reasmMaxLen {
		t.Fatalf("holds %d entries and %d bytes, over its cap of %d entries", e, b, len(r.entries))
	}
	return got, ecn, v
}

func TestReassemblerPutsDatagramsBackTogether(t *testing.T) {
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	whole := udpDatagram(t, payload)
	fs := cut(t, 7, whole, 1448, 2896)
	for _, tt := range []struct {
		name  string
		order []int
	}{{"in-order", []int{0, 1, 2}}, {"reversed", []int{2, 1, 0}}, {"last-first", []int{2, 0, 1}}} {
		t.Run(tt.name, func(t *testing.T) {
			r := newReassembler(4)
			for k, i := range tt.order {
				got, ecn, v := r.feed(t, fs[i], 0)
				if k < len(tt.order)-1 {
					if v != fragHeld {
						t.Fatalf("fragment %d: verdict %d, want held", i, v)
					}
					continue
				}
				if v != fragComplete || !bytes.Equal(got, whole) || ecn != flowaddr.ECT0 {
					t.Fatalf("last fragment: verdict %d, %d bytes, ECN %v; want the %d-byte datagram, ECT(0)", v, len(got), ecn, len(whole))
				}
			}
			if e, b := r.held(); e != 0 || b != 0 || r.reassembled.Load() != 1 || r.fragmentsDropped.Load() != 0 {
				t.Errorf("after: held %d entries %d bytes, reassembled %d, dropped %d; want 0, 0, 1, 0", e, b, r.reassembled.Load(), r.fragmentsDropped.Load())
			}
		})
	}
}

// TestReadRawPacketReassembles feeds the fragments through the raw
// receiver's per-packet function, which checks the reassembled UDP header
// and checksum.
func TestReadRawPacketReassembles(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 100)
	whole := udpDatagram(t, payload)
	bad := bytes.Clone(whole)
	bad[100] ^= 1
	wrongPort := bytes.Clone(whole)
	binary.BigEndian.PutUint16(wrongPort[2:], testPort+1)
	for _, tt := range []struct {
		name  string
		whole []byte
		want  rawVerdict
	}{{"good", whole, rawAccept}, {"bad-checksum", bad, rawBadChecksum}, {"wrong-port", wrongPort, rawForeign}} {
		t.Run(tt.name, func(t *testing.T) {
			r := newReassembler(4)
			fs := cut(t, 9, tt.whole, 800)
			var d rawDatagram
			var v rawVerdict
			for _, f := range fs {
				buf := make([]byte, 2000)
				copy(buf, f.data)
				d, v = readRawPacket(&f.head, buf, f.captured, netip.MustParsePrefix("2001:db8:b::/64"), testPort, true, false, r, 0)
			}
			if v != tt.want {
				t.Fatalf("verdict %d, want %d", v, tt.want)
			}
			if v == rawAccept && (!bytes.Equal(d.payload, payload) || !d.moved || d.sport != 4000) {
				t.Errorf("got %d bytes (moved %v) from port %d; want the %d-byte payload, moved, from 4000", len(d.payload), d.moved, d.sport, len(payload))
			}
		})
	}
	t.Run("atomic-fragment", func(t *testing.T) {
		f := makeFragment(t, 3, whole, 0, len(whole), false, flowaddr.CE)
		d, v := readRawPacket(&f.head, f.data, f.captured, netip.MustParsePrefix("2001:db8:b::/64"), testPort, false, false, newReassembler(1), 0)
		if v != rawAccept || !bytes.Equal(d.payload, payload) || d.ecn != flowaddr.CE {
			t.Errorf("verdict %d, %d bytes, ECN %v; want the payload with CE", v, len(d.payload), d.ecn)
		}
	})
}

// TestReassemblerRefusesHostileFragments feeds fragment sets that must
// not produce a datagram, and checks what is dropped and counted.
func TestReassemblerRefusesHostileFragments(t *testing.T) {
	whole := udpDatagram(t, make([]byte, 3000))               // 3008 bytes
	padded := append(bytes.Clone(whole), make([]byte, 64)...) // for ends past the datagram's
	frag := func(off, end int, more bool) fragment {
		return makeFragment(t, 5, padded, off, end, more, flowaddr.ECT0)
	}
	big := make([]byte, reasmMaxLen+8)
	for _, tt := range []struct {
		name        string
		frags       []fragment
		wantDropped uint64
	}{
		{"overlap", []fragment{frag(0, 1000, true), frag(992, 2000, true), frag(2000, 3008, false)}, 3},
		{"overlap-inside", []fragment{frag(0, 2000, true), frag(8, 16, true), frag(2000, 3008, false)}, 3},
		{"overlap-after-last", []fragment{frag(2000, 3008, false), frag(1000, 2008, true), frag(0, 1000, true)}, 3},
		{"duplicate-then-overlap", []fragment{frag(0, 1000, true), frag(0, 1000, true), frag(500, 1500, true)}, 3},
		{"end-past-last", []fragment{frag(2000, 3008, false), frag(2000, 3016, true), frag(0, 1000, true)}, 3},
		{"two-different-lasts", []fragment{frag(2000, 3008, false), frag(1000, 2000, false), frag(0, 1000, true)}, 3},
		{"not-multiple-of-8", []fragment{frag(0, 1001, true), frag(1000, 3008, false)}, 2},
		{"empty", []fragment{frag(0, 1000, true), frag(1000, 1000, true), frag(1000, 3008, false)}, 3},
		{"first-without-udp-header", []fragment{frag(0, 0, true)}, 1},
		{"oversize", []fragment{makeFragment(t, 5, big, reasmMaxLen-1000+1, reasmMaxLen+8, false, flowaddr.ECT0)}, 1},
		{"ecn-not-ect-mixed", []fragment{frag(0, 1000, true), makeFragment(t, 5, whole, 1000, 3008, false, flowaddr.NotECT)}, 2},
		{"last-before-end-seen", []fragment{frag(0, 1000, true), frag(1504, 2000, true), frag(1000, 1496, false)}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newReassembler(4)
			for i, f := range tt.frags {
				if _, _, v := r.feed(t, f, 0); v == fragComplete {
					t.Fatalf("fragment %d completed a datagram", i)
				}
			}
			if got := r.fragmentsDropped.Load(); got != tt.wantDropped {
				t.Errorf("dropped %d fragments, want %d", got, tt.wantDropped)
			}
			if _, b := r.held(); b != 0 {
				t.Errorf("still holds %d bytes of a voided datagram", b)
			}
		})
	}
	t.Run("duplicate", func(t *testing.T) {
		r := newReassembler(4)
		fs := []fragment{frag(0, 1000, true), frag(0, 1000, true), frag(1000, 3008, false)}
		for _, f := range fs[:2] {
			r.feed(t, f, 0)
		}
		if got, _, v := r.feed(t, fs[2], 0); v != fragComplete || !bytes.Equal(got, whole) {
			t.Fatalf("an exact duplicate voided the datagram: verdict %d", v)
		}
		if got := r.fragmentsDropped.Load(); got != 1 {
			t.Errorf("dropped %d, want the duplicate", got)
		}
	})
	t.Run("too-many", func(t *testing.T) {
		r := newReassembler(4)
		tiny := udpDatagram(t, make([]byte, 8*reasmMaxFragments)) // 65 pieces of 8
		for off := 0; off < len(tiny); off += 8 {
			end := off + 8
			if _, _, v := r.feed(t, makeFragment(t, 1, tiny, off, end, end < len(tiny), 0), 0); v == fragComplete {
				t.Fatal("a datagram of 65 fragments completed")
			}
		}
		if got := r.fragmentsDropped.Load(); got != reasmMaxFragments+1 {
			t.Errorf("dropped %d, want all %d", got, reasmMaxFragments+1)
		}
	})
	t.Run("never-completed", func(t *testing.T) {
		r := newReassembler(4)
		r.feed(t, frag(0, 1000, true), 0)
		r.feed(t, frag(2000, 3008, false), time.Second)
		// The missing piece comes too late: the datagram has timed out,
		// and the late fragment starts a new one.
		if _, _, v := r.feed(t, frag(1000, 2000, true), reasmTimeout+time.Millisecond); v != fragHeld {
			t.Fatalf("late fragment: verdict %d, want held (a new datagram)", v)
		}
		if got := r.fragmentsDropped.Load(); got != 2 {
			t.Errorf("dropped %d, want the 2 that timed out", got)
		}
	})
}

// TestReassemblerBoundedMemory opens more datagrams than it has room for,
// with a hostile sender's single fragments, then completes a real one.
func TestReassemblerBoundedMemory(t *testing.T) {
	const capacity = 8
	r := newReassembler(capacity)
	whole := udpDatagram(t, make([]byte, 3000))
	var sent uint64
	for id := range uint32(1000) {
		r.feed(t, makeFragment(t, id+100, whole, 0, 1448, true, flowaddr.ECT0), time.Duration(id)*time.Millisecond)
		sent++
	}
	if e, b := r.held(); e != capacity || b != capacity*1448 {
		t.Errorf("holds %d entries and %d bytes, want %d and %d", e, b, capacity, capacity*1448)
	}
	if got := r.fragmentsDropped.Load(); got != sent-capacity {
		t.Errorf("dropped %d, want %d pushed out", got, sent-capacity)
	}
	allocated := 0
	for i := range r.entries {
		if r.entries[i].buf != nil {
			allocated++
		}
	}
	if allocated > capacity {
		t.Errorf("%d buffers allocated for %d entries", allocated, capacity)
	}
	// A real datagram still gets through, pushing out the oldest.
	var got []byte
	for _, f := range cut(t, 1, whole, 1448) {
		got, _, _ = r.feed(t, f, time.Second)
	}
	if !bytes.Equal(got, whole) {
		t.Error("a datagram arriving during the flood was not reassembled")
	}
}

func TestReassembledECN(t *testing.T) {
	bit := func(es ...flowaddr.ECN) (m uint8) {
		for _, e := range es {
			m |= 1 << e
		}
		return m
	}
	for _, tt := range []struct {
		first flowaddr.ECN
		seen  uint8
		want  flowaddr.ECN
		ok    bool
	}{
		{flowaddr.ECT0, bit(flowaddr.ECT0), flowaddr.ECT0, true},
		{flowaddr.NotECT, bit(flowaddr.NotECT), flowaddr.NotECT, true},
		{flowaddr.ECT0, bit(flowaddr.ECT0, flowaddr.CE), flowaddr.CE, true},
		{flowaddr.ECT1, bit(flowaddr.ECT0, flowaddr.ECT1), flowaddr.ECT1, true},
		{flowaddr.ECT0, bit(flowaddr.ECT0, flowaddr.NotECT), 0, false},
		{flowaddr.CE, bit(flowaddr.CE, flowaddr.NotECT), 0, false},
	} {
		if got, ok := reassembledECN(tt.first, tt.seen); got != tt.want || ok != tt.ok {
			t.Errorf("reassembledECN(%v, %04b) = %v, %v; want %v, %v", tt.first, tt.seen, got, ok, tt.want, tt.ok)
		}
	}
}

// TestReassemblerAgainstIP4Defrag cuts random datagrams into random
// fragments, shuffled and with duplicates, and compares with gopacket's
// IPv4 defragmenter fed the same fragments as IPv4 ones: gopacket has no
// IPv6 defragmenter, but the offsets, lengths and More flag mean the same.
func TestReassemblerAgainstIP4Defrag(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := newReassembler(4)
	for round := range 300 {
		payload := make([]byte, rng.IntN(20000))
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		whole := udpDatagram(t, payload)
		var at []int
		for off := 8 * (1 + rng.IntN(200)); off < len(whole); off += 8 * (1 + rng.IntN(200)) {
			at = append(at, off)
		}
		if len(at) == 0 || len(at) >= reasmMaxFragments {
			continue
		}
		id := uint32(round)
		fs := cut(t, id, whole, at...)
		order := rng.Perm(len(fs))
		if rng.IntN(3) == 0 { // an exact duplicate somewhere
			order = append(order, order[rng.IntN(len(order))])
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		var got []byte
		completions := 0
		v4 := ip4defrag.NewIPv4Defragmenter()
		var want []byte
		for _, i := range order {
			if g, _, v := r.feed(t, fs[i], 0); v == fragComplete {
				got = bytes.Clone(g)
				completions++
			}
			f := fs[i]
			off := int(binary.BigEndian.Uint16(f.head[42:]) &^ 7)
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, Id: uint16(id),
				SrcIP: net.IP{192, 0, 2, 1}, DstIP: net.IP{192, 0, 2, 2},
				FragOffset: uint16(off / 8), Length: uint16(20 + len(f.data))}
			if f.head[43]&1 != 0 {
				ip.Flags = layers.IPv4MoreFragments
			}
			ip.Payload = f.data
			out, err := v4.DefragIPv4(ip)
			if err != nil {
				t.Fatalf("round %d: ip4defrag: %v", round, err)
			}
			if out != nil {
				want = out.Payload
			}
		}
		if completions != 1 || !bytes.Equal(got, want) || !bytes.Equal(got, whole) {
			t.Fatalf("round %d (%d fragments, order %v): %d completions, %d bytes; ip4defrag %d bytes; sent %d", round, len(fs), order, completions, len(got), len(want), len(whole))
		}
	}
}

// FuzzReassembler feeds a reassembler of 4 entries a fuzzed sequence of
// fragments of 3 datagrams. Every fragment carries the bytes its datagram
// has at its offset, so whatever completes must hold those bytes; held
// entries and bytes must stay under the cap; drops never exceed what was
// fed.
func FuzzReassembler(f *testing.F) {
	// Each fragment takes 6 bytes: datagram, offset/8 (2), length/8,
	// flags (more, ECN, length remainder), time step.
	f.Add([]byte{0, 0, 0, 10, 1, 0, 0, 0, 10, 5, 0, 0})
	f.Add([]byte{1, 0, 0, 255, 1, 0, 1, 0, 31, 255, 0, 0, 1, 0, 30, 10, 0, 0})
	f.Add(bytes.Repeat([]byte{2, 0, 1, 1, 1, 0}, 70))
	f.Fuzz(reassembleOps)
}

// reassembleOps is FuzzReassembler's body.
func reassembleOps(t *testing.T, ops []byte) {
	ops = ops[:min(len(ops), 6*128)] // long enough to pass the fragment limit
	r := newReassembler(4)
	pattern := func(d, p int) byte { return byte(p*7 + d*101 + p>>8) }
	var fed uint64
	var now time.Duration
	for ; len(ops) >= 6; ops = ops[6:] {
		d := int(ops[0] % 3)
		off := int(binary.BigEndian.Uint16(ops[1:])) % 8192 * 8
		length := int(ops[3])*8 + int(ops[4]>>4&7)
		more := ops[4]&1 != 0
		ecn := flowaddr.ECN(ops[4] >> 1 & 3)
		now += time.Duration(ops[5]) * 50 * time.Millisecond
		var frag fragment
		frag.head[0], frag.head[1] = 0x60|byte(ecn)>>2, byte(ecn)<<4
		binary.BigEndian.PutUint16(frag.head[4:], uint16(fragHeaderLen+length))
		frag.head[6] = protoFragment
		copy(frag.head[8:24], peerAddr.AsSlice())
		copy(frag.head[24:40], inPrefix.AsSlice())
		frag.head[40] = protoUDP
		v := uint16(off)
		if more {
			v |= 1
		}
		binary.BigEndian.PutUint16(frag.head[42:], v)
		binary.BigEndian.PutUint32(frag.head[44:], uint32(d))
		frag.data = make([]byte, length)
		for i := range frag.data {
			frag.data[i] = pattern(d, off+i)
		}
		frag.captured = rawHeadLen + length
		got, _, verdict := r.feed(t, frag, now)
		if off != 0 || more {
			fed++
		}
		if verdict == fragComplete {
			if len(got) > reasmMaxLen {
				t.Fatalf("completed a %d-byte datagram", len(got))
			}
			for p, b := range got {
				if b != pattern(d, p) {
					t.Fatalf("datagram %d byte %d is %#x, want %#x", d, p, b, pattern(d, p))
				}
			}
		}
		if dropped := r.fragmentsDropped.Load(); dropped > fed {
			t.Fatalf("dropped %d of %d fragments", dropped, fed)
		}
	}
}
