package flowaddr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// figure4 is RFC 6040 Figure 4 ("New IP in IP Decapsulation Behaviour"),
// copied from the RFC: rows are the arriving inner ECN, columns the
// arriving outer ECN, both in the RFC's order Not-ECT, ECT(0), ECT(1), CE.
var figure4 = [4][4]struct {
	ecn  ECN
	drop bool
}{
	/* Not-ECT */ {{NotECT, false}, {NotECT, false}, {NotECT, false}, {NotECT, true}},
	/* ECT(0)  */ {{ECT0, false}, {ECT0, false}, {ECT1, false}, {CE, false}},
	/* ECT(1)  */ {{ECT1, false}, {ECT1, false}, {ECT1, false}, {CE, false}},
	/* CE      */ {{CE, false}, {CE, false}, {CE, false}, {CE, false}},
}

// figure4Order is the order of Figure 4's rows and columns.
var figure4Order = [4]ECN{NotECT, ECT0, ECT1, CE}

func figure4Cell(inner, outer ECN) (ECN, bool) {
	var row, col int
	for i, e := range figure4Order {
		if e == inner {
			row = i
		}
		if e == outer {
			col = i
		}
	}
	c := figure4[row][col]
	return c.ecn, c.drop
}

// onesSum returns the ones' complement sum of b's 16-bit big-endian words.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// headerChecksum computes an IPv4 header's checksum from scratch (RFC 791,
// RFC 1071): the complement of the ones' complement sum of the header
// with the checksum field taken as zero.
func headerChecksum(h []byte) uint16 {
	c := bytes.Clone(h)
	c[10], c[11] = 0, 0
	return ^onesSum(c)
}

// checksumValid reports whether an IPv4 header verifies: the ones'
// complement sum over it, checksum included, is all ones.
func checksumValid(h []byte) bool { return onesSum(h) == 0xffff }

// ipv4Packet builds an IPv4 packet from the documentation range with the
// given TOS byte, options (a multiple of 4 bytes) and payload, and a
// correct header checksum.
func ipv4Packet(tos byte, options, payload []byte) []byte {
	hl := 20 + len(options)
	p := make([]byte, hl+len(payload))
	p[0] = 0x40 | byte(hl/4)
	p[1] = tos
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], 0x1234) // identification
	p[8], p[9] = 64, 17                       // TTL, UDP
	copy(p[12:], []byte{192, 0, 2, 1, 192, 0, 2, 2})
	copy(p[20:], options)
	copy(p[hl:], payload)
	binary.BigEndian.PutUint16(p[10:], headerChecksum(p[:hl]))
	return p
}

// ipv6Packet builds an IPv6 packet from the documentation range with the
// given Traffic Class, flow label 0x12345 and payload.
func ipv6Packet(tc byte, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	binary.BigEndian.PutUint32(p[0:], 6<<28|uint32(tc)<<20|0x12345)
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	p[6], p[7] = 17, 64 // UDP, hop limit
	copy(p[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
	copy(p[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 15: 2})
	copy(p[40:], payload)
	return p
}

// TestHeaderChecksumGopacket checks the test's reference checksum against
// gopacket's, on a header with options.
func TestHeaderChecksumGopacket(t *testing.T) {
	ip := &layers.IPv4{
		Version: 4, TOS: 0xb9, Id: 0xbeef, TTL: 3, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IP{192, 0, 2, 7}, DstIP: net.IP{192, 0, 2, 99},
		Options: []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 192, 0, 2, 1}}},
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ip, gopacket.Payload("hi"))
	if err != nil {
		t.Fatal(err)
	}
	p := buf.Bytes()
	hl := int(p[0]&0x0f) * 4
	if hl <= 20 {
		t.Fatalf("gopacket wrote no options: IHL %d", hl/4)
	}
	if got := headerChecksum(p[:hl]); got != ip.Checksum {
		t.Fatalf("headerChecksum = %#04x, gopacket = %#04x", got, ip.Checksum)
	}
	if !checksumValid(p[:hl]) {
		t.Fatal("gopacket's header does not verify")
	}
	if _, err := Decapsulate(p, CE); err != nil {
		t.Fatal(err)
	}
	if !checksumValid(p[:hl]) {
		t.Error("checksum invalid after Decapsulate")
	}
	var back layers.IPv4
	if err := back.DecodeFromBytes(p, gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	if back.TOS != 0xbb || back.Checksum != headerChecksum(p[:hl]) {
		t.Errorf("after Decapsulate gopacket reads TOS %#02x checksum %#04x, want 0xbb and %#04x", back.TOS, back.Checksum, headerChecksum(p[:hl]))
	}
}

// TestDecapsulateFigure4 runs every inner x outer combination of RFC 6040
// Figure 4 on IPv4 and IPv6 packets.
func TestDecapsulateFigure4(t *testing.T) {
	const dscp = 46 << 2 // EF: must survive untouched
	payload := []byte("inner payload")
	options := []byte{1, 1, 1, 0} // NOP, NOP, NOP, End of Options
	for _, version := range []int{4, 6} {
		for row, inner := range figure4Order {
			for col, outer := range figure4Order {
				want := figure4[row][col]
				t.Run(fmt.Sprintf("IPv%d/inner=%s/outer=%s", version, inner, outer), func(t *testing.T) {
					var pkt []byte
					if version == 4 {
						pkt = ipv4Packet(dscp|byte(inner), options, payload)
					} else {
						pkt = ipv6Packet(dscp|byte(inner), payload)
					}
					orig := bytes.Clone(pkt)
					drop, err := Decapsulate(pkt, outer)
					if err != nil {
						t.Fatalf("Decapsulate: %v", err)
					}
					if drop != want.drop {
						t.Fatalf("drop = %v, want %v", drop, want.drop)
					}
					if drop {
						if !bytes.Equal(pkt, orig) {
							t.Error("a dropped packet was modified")
						}
						return
					}
					got, ok := PacketECN(pkt)
					if !ok || got != want.ecn {
						t.Errorf("inner ECN after = %s, %v, want %s", got, ok, want.ecn)
					}
					// Rebuild the expected packet from scratch.
					var exp []byte
					if version == 4 {
						exp = ipv4Packet(dscp|byte(want.ecn), options, payload)
					} else {
						exp = ipv6Packet(dscp|byte(want.ecn), payload)
					}
					if !bytes.Equal(pkt, exp) {
						t.Errorf("packet after Decapsulate\n got % x\nwant % x", pkt, exp)
					}
				})
			}
		}
	}
}

// TestDecapsulateChecksumRandom checks the incremental IPv4 checksum
// update against a full recomputation on random headers of every length,
// options included.
func TestDecapsulateChecksumRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(6040, 1624))
	changed := 0
	for i := range 20000 {
		ihl := 5 + rng.IntN(11)
		h := make([]byte, ihl*4)
		for j := range h {
			h[j] = byte(rng.Uint32())
		}
		h[0] = 0x40 | byte(ihl)
		binary.BigEndian.PutUint16(h[10:], headerChecksum(h))
		outer := ECN(rng.IntN(4))
		before := bytes.Clone(h)
		drop, err := Decapsulate(h, outer)
		if err != nil {
			t.Fatalf("header %d: %v", i, err)
		}
		if drop || bytes.Equal(h, before) {
			continue
		}
		changed++
		if got, want := binary.BigEndian.Uint16(h[10:]), headerChecksum(h); got != want {
			t.Fatalf("header %d (% x), outer %s: checksum %#04x, full recomputation %#04x", i, before, outer, got, want)
		}
	}
	// 3 of the 16 combinations change the header: expect 3750.
	if changed < 3000 {
		t.Errorf("only %d of 20000 random headers changed: the test exercised too little", changed)
	}
}

// TestDecapsulateChecksumEdges checks the checksums at the edges of ones'
// complement arithmetic: a header whose checksum is zero before the
// change, and one whose checksum becomes zero after it.
func TestDecapsulateChecksumEdges(t *testing.T) {
	// withChecksum returns a header with TOS tos whose correct checksum is
	// want, found by choosing the identification field.
	withChecksum := func(tos byte, want uint16) []byte {
		h := ipv4Packet(tos, nil, nil)
		h[4], h[5] = 0, 0
		// The checksum is ^(rest + id); pick id so that rest + id = ^want.
		rest := onesSum(append(bytes.Clone(h[:10]), h[12:]...))
		id := ^want - rest
		if ^want < rest {
			id-- // ones' complement subtraction borrows around
		}
		binary.BigEndian.PutUint16(h[4:], id)
		binary.BigEndian.PutUint16(h[10:], headerChecksum(h))
		if got := binary.BigEndian.Uint16(h[10:]); got != want {
			t.Fatalf("could not build a header with checksum %#04x: got %#04x", want, got)
		}
		return h
	}
	t.Run("zero before", func(t *testing.T) {
		h := withChecksum(byte(ECT0), 0)
		if _, err := Decapsulate(h, CE); err != nil {
			t.Fatal(err)
		}
		if got, want := binary.BigEndian.Uint16(h[10:]), headerChecksum(h); got != want || !checksumValid(h) {
			t.Errorf("checksum %#04x, want %#04x", got, want)
		}
	})
	t.Run("zero after", func(t *testing.T) {
		// ECT(0) -> CE adds 1 to the first word, so the checksum drops by 1.
		h := withChecksum(byte(ECT0), 1)
		if _, err := Decapsulate(h, CE); err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint16(h[10:]); got != 0 || !checksumValid(h) {
			t.Errorf("checksum %#04x, want 0x0000", got)
		}
	})
}

func TestDecapsulateErrors(t *testing.T) {
	v4 := ipv4Packet(byte(ECT0), []byte{1, 1, 1, 0}, nil)
	tests := []struct {
		name string
		pkt  []byte
		err  error
	}{
		{"empty", nil, ErrEmpty},
		{"version 0", make([]byte, 40), ErrVersion},
		{"version 5", append([]byte{0x50}, make([]byte, 39)...), ErrVersion},
		{"IPv4 shorter than 20 bytes", v4[:19], ErrTruncated},
		{"IPv4 shorter than its IHL", v4[:23], ErrTruncated},
		{"IPv4 IHL 4", append([]byte{0x44}, v4[1:]...), ErrHeaderLength},
		{"IPv4 IHL 0", append([]byte{0x40}, v4[1:]...), ErrHeaderLength},
		{"IPv6 shorter than 40 bytes", ipv6Packet(byte(ECT0), nil)[:39], ErrTruncated},
		{"one byte", []byte{0x60}, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := bytes.Clone(tt.pkt)
			drop, err := Decapsulate(tt.pkt, CE)
			if !errors.Is(err, tt.err) {
				t.Errorf("Decapsulate error = %v, want %v", err, tt.err)
			}
			if drop {
				t.Error("drop = true with an error")
			}
			if !bytes.Equal(tt.pkt, orig) {
				t.Error("Decapsulate modified a packet it rejected")
			}
			if e, ok := PacketECN(tt.pkt); ok {
				t.Errorf("PacketECN = %s, true for a packet Decapsulate rejects", e)
			}
		})
	}
}

func TestPacketECN(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want ECN
		ok   bool
	}{
		{"IPv4 Not-ECT", ipv4Packet(0xfc, nil, nil), NotECT, true},
		{"IPv4 ECT(1)", ipv4Packet(0x01, nil, nil), ECT1, true},
		{"IPv4 ECT(0) with options", ipv4Packet(0xb8|2, []byte{1, 1, 1, 0}, nil), ECT0, true},
		{"IPv4 CE", ipv4Packet(0x03, nil, []byte{0xff}), CE, true},
		{"IPv6 Not-ECT", ipv6Packet(0xfc, nil), NotECT, true},
		{"IPv6 ECT(1)", ipv6Packet(0x01, nil), ECT1, true},
		{"IPv6 ECT(0)", ipv6Packet(0xb8|2, []byte{1, 2, 3}), ECT0, true},
		{"IPv6 CE", ipv6Packet(0x03, nil), CE, true},
		{"empty", nil, NotECT, false},
		{"IPv4 truncated", ipv4Packet(3, nil, nil)[:19], NotECT, false},
		{"IPv6 truncated", ipv6Packet(3, nil)[:39], NotECT, false},
		{"Ethernet frame", append([]byte{0x02, 0, 0x5e, 0, 0, 1, 0x02, 0, 0x5e, 0, 0, 2, 0x86, 0xdd}, ipv6Packet(3, nil)...), NotECT, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PacketECN(tt.pkt)
			if got != tt.want || ok != tt.ok {
				t.Errorf("PacketECN = %s, %v, want %s, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestOuterECN(t *testing.T) {
	// RFC 6040 section 4.1, normal mode: the outer header copies the inner
	// ECN field, CE included.
	for _, inner := range figure4Order {
		if got := OuterECN(inner); got != inner {
			t.Errorf("OuterECN(%s) = %s, want %s", inner, got, inner)
		}
		if got := OuterECN(inner | 0xfc); got != inner {
			t.Errorf("OuterECN(%#x) = %s, want %s: bits above the ECN field must be ignored", uint8(inner|0xfc), got, inner)
		}
	}
}

func TestECNString(t *testing.T) {
	for e, want := range map[ECN]string{NotECT: "Not-ECT", ECT1: "ECT(1)", ECT0: "ECT(0)", CE: "CE", 4: "ECN(4)"} {
		if got := e.String(); got != want {
			t.Errorf("ECN(%d).String() = %q, want %q", uint8(e), got, want)
		}
	}
}

func TestECNAllocs(t *testing.T) {
	v4 := ipv4Packet(byte(ECT0), []byte{1, 1, 1, 0}, []byte("payload"))
	v6 := ipv6Packet(byte(ECT0), []byte("payload"))
	garbage := []byte{0x45, 1, 2}
	outer := NotECT
	allocs := testing.AllocsPerRun(100, func() {
		outer = (outer + 1) & CE
		_, _ = Decapsulate(v4, outer)
		_, _ = Decapsulate(v6, outer)
		_, _ = Decapsulate(garbage, outer)
		_, _ = PacketECN(v4)
		_, _ = PacketECN(garbage)
		_ = OuterECN(outer)
	})
	if allocs != 0 {
		t.Errorf("ECN helpers: %v allocations per run, want 0", allocs)
	}
}

func ecnFuzzSeeds(f *testing.F) {
	for _, inner := range figure4Order {
		f.Add(ipv4Packet(0xb8|byte(inner), nil, []byte("x")), byte(CE))
		f.Add(ipv4Packet(byte(inner), []byte{7, 7, 4, 192, 0, 2, 1, 0}, nil), byte(ECT1))
		f.Add(ipv6Packet(byte(inner), []byte("y")), byte(CE))
		f.Add(ipv6Packet(0xb8|byte(inner), nil), byte(ECT1))
	}
	f.Add([]byte{}, byte(0))
	f.Add([]byte{0x4f, 0x01}, byte(3))
	f.Add([]byte{0x60}, byte(0xff))
}

// FuzzDecapsulate checks that Decapsulate never panics, rejects exactly
// what PacketECN rejects, applies RFC 6040 Figure 4, changes nothing but
// the ECN bits (and the IPv4 checksum), and keeps a valid checksum valid
// and equal to a full recomputation.
func FuzzDecapsulate(f *testing.F) {
	ecnFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte, outerByte byte) {
		orig := bytes.Clone(pkt)
		inner, isIP := PacketECN(pkt)
		hl := 0
		if isIP && pkt[0]>>4 == 4 {
			hl = int(pkt[0]&0x0f) * 4
		}
		wasValid := hl > 0 && checksumValid(orig[:hl])

		drop, err := Decapsulate(pkt, ECN(outerByte))
		if err != nil {
			if isIP {
				t.Fatalf("Decapsulate: %v, but PacketECN accepted the packet", err)
			}
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrHeaderLength) {
				t.Fatalf("Decapsulate returned an unexpected error: %v", err)
			}
			if drop || !bytes.Equal(pkt, orig) {
				t.Fatal("Decapsulate dropped or modified a packet it rejected")
			}
			return
		}
		if !isIP {
			t.Fatal("Decapsulate accepted a packet that PacketECN rejected")
		}
		want, wantDrop := figure4Cell(inner, ECN(outerByte)&CE)
		if drop != wantDrop {
			t.Fatalf("inner %s, outer %s: drop = %v, want %v", inner, ECN(outerByte)&CE, drop, wantDrop)
		}
		if drop {
			if !bytes.Equal(pkt, orig) {
				t.Fatal("a dropped packet was modified")
			}
			return
		}
		if got, _ := PacketECN(pkt); got != want {
			t.Fatalf("inner %s, outer %s: ECN after = %s, want %s", inner, ECN(outerByte)&CE, got, want)
		}
		ecnMask := byte(0x30)
		if hl > 0 {
			ecnMask = 0x03
		}
		for i := range pkt {
			switch {
			case pkt[i] == orig[i]:
			case i == 1 && (pkt[i]^orig[i])&^ecnMask == 0:
			case hl > 0 && (i == 10 || i == 11):
			default:
				t.Fatalf("byte %d changed from %#02x to %#02x", i, orig[i], pkt[i])
			}
		}
		if wasValid {
			if !checksumValid(pkt[:hl]) {
				t.Fatal("a valid IPv4 checksum became invalid")
			}
			if !bytes.Equal(pkt, orig) {
				if got, want := binary.BigEndian.Uint16(pkt[10:]), headerChecksum(pkt[:hl]); got != want {
					t.Fatalf("checksum %#04x, full recomputation %#04x", got, want)
				}
			}
		}
	})
}

// FuzzPacketECN checks PacketECN against the header layout, written out
// independently: ok for a whole IPv4 (IHL >= 5) or IPv6 header, and the
// ECN bits of the TOS or Traffic Class byte.
func FuzzPacketECN(f *testing.F) {
	ecnFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte, _ byte) {
		e, ok := PacketECN(pkt)
		var wantOK bool
		var want ECN
		switch {
		case len(pkt) >= 20 && pkt[0]>>4 == 4:
			ihl := int(pkt[0] & 0x0f)
			wantOK = ihl >= 5 && len(pkt) >= ihl*4
			want = ECN(pkt[1] % 4)
		case len(pkt) >= 40 && pkt[0]>>4 == 6:
			wantOK = true
			tc := pkt[0]<<4 | pkt[1]>>4
			want = ECN(tc % 4)
		}
		if !wantOK {
			want = NotECT
		}
		if ok != wantOK || e != want {
			t.Fatalf("PacketECN(% x) = %s, %v, want %s, %v", pkt[:min(len(pkt), 2)], e, ok, want, wantOK)
		}
	})
}

// BenchmarkDecapsulate measures the marking path (ECT(0) inner, CE
// outer), restoring the header before each call, against the restore
// alone as a baseline.
func BenchmarkDecapsulate(b *testing.B) {
	for _, tc := range []struct {
		name string
		pkt  []byte
		hl   int
	}{
		{"ipv4", ipv4Packet(byte(ECT0), nil, make([]byte, 1200)), 20},
		{"ipv6", ipv6Packet(byte(ECT0), make([]byte, 1200)), 40},
	} {
		header := bytes.Clone(tc.pkt[:tc.hl])
		b.Run(tc.name+"/restore-only", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				copy(tc.pkt, header)
			}
		})
		b.Run(tc.name+"/mark", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				copy(tc.pkt, header)
				if _, err := Decapsulate(tc.pkt, CE); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
