package flowaddr_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
	tu "github.com/flowspread/flowspread/internal/testutil"
)

// sentinels are the only errors the parsers may return.
var sentinels = []error{
	flowaddr.ErrEmpty, flowaddr.ErrTruncated, flowaddr.ErrVersion, flowaddr.ErrHeaderLength,
	flowaddr.ErrTotalLength, flowaddr.ErrExtChain, flowaddr.ErrDepth, flowaddr.ErrVLANTags, flowaddr.ErrNotIP,
}

// checkParser checks what holds for any input of a parser: the error is a
// sentinel, the key is well formed, and nothing beyond len(data) is read
// (the same bytes with different bytes after them in the backing array
// give the same result).
func checkParser(t *testing.T, name string, parse func([]byte) (flowaddr.Key, error), data []byte) (flowaddr.Key, error) {
	t.Helper()
	n := len(data)
	k, err := parse(data[:n:n])
	if err != nil {
		known := false
		for _, s := range sentinels {
			known = known || err == s
		}
		if !known {
			t.Fatalf("%s: error %v is not a sentinel", name, err)
		}
	}
	if k.Flags&flowaddr.FlagIPv4 != 0 {
		for _, a := range [][16]byte{k.Src, k.Dst} {
			if a[10] != 0xff || a[11] != 0xff || [10]byte(a[:10]) != [10]byte{} {
				t.Fatalf("%s: IPv4 key with an address not v4-mapped: %v", name, fmtKey(k))
			}
		}
	}
	if k.Flags&flowaddr.FlagFragment != 0 && (k.SrcPort != 0 || k.DstPort != 0) {
		t.Fatalf("%s: fragment key with ports: %v", name, fmtKey(k))
	}
	if k.Flags&^(flowaddr.FlagIPv4|flowaddr.FlagFragment) != 0 {
		t.Fatalf("%s: unknown flags: %v", name, fmtKey(k))
	}
	wide := make([]byte, n, n+64)
	copy(wide, data)
	tail := wide[n:cap(wide)]
	for i := range tail {
		tail[i] = 0x45 // a plausible header byte, should the parser look
	}
	if k2, err2 := parse(wide); k2 != k || err2 != err {
		t.Fatalf("%s: result depends on bytes beyond the packet: %v, %v then %v, %v", name, fmtKey(k), err, fmtKey(k2), err2)
	}
	return k, err
}

// fuzzSeeds returns every table packet, the benchmark packets and random
// packets and frames.
func fuzzSeeds(frames bool) [][]byte {
	var seeds [][]byte
	var tables [][]parseCase
	if frames {
		tables = [][]parseCase{ethernetCases()}
	} else {
		tables = [][]parseCase{ipCases(), tunnelCases(), transportCases(), icmpErrorCases()}
	}
	for _, cases := range tables {
		for _, tc := range cases {
			if len(tc.pkt) < 4096 {
				seeds = append(seeds, tc.pkt)
			}
		}
	}
	if !frames {
		for _, bp := range tu.BenchPackets() {
			seeds = append(seeds, bp.Data)
		}
	}
	r := rand.New(rand.NewPCG(11, 12))
	for range 200 {
		if frames {
			seeds = append(seeds, tu.RandomFrame(r, flowaddr.MaxDepth, false).Data)
		} else {
			seeds = append(seeds, tu.RandomPacket(r, flowaddr.MaxDepth, false).Data)
		}
	}
	return seeds
}

// FuzzParse checks Parse on any input: no panic, only sentinel errors, no
// read beyond the packet, and agreement with ParseInto, with the same
// packet behind a link header, with trailing bytes after it, and inside an
// IP tunnel.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(false) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := checkParser(t, "Parse", flowaddr.Parse, data)
		if ki, erri := parseIntoDirty(data); ki != k || erri != err {
			t.Fatalf("ParseInto %v, %v; Parse %v, %v", fmtKey(ki), erri, fmtKey(k), err)
		}
		if len(data) == 0 || len(data) > 0xffff-40 {
			return
		}
		version := data[0] >> 4
		if version != 4 && version != 6 {
			return
		}

		// The same packet behind Ethernet and Linux cooked capture headers.
		etherType := uint16(0x0800)
		if version == 6 {
			etherType = 0x86dd
		}
		frame := make([]byte, 14, 14+len(data))
		binary.BigEndian.PutUint16(frame[12:], etherType)
		frame = append(frame, data...)
		if ke, erre := flowaddr.ParseEthernet(frame); ke != k || erre != err {
			t.Fatalf("ParseEthernet %v, %v; Parse %v, %v", fmtKey(ke), erre, fmtKey(k), err)
		}
		sll := make([]byte, 16, 16+len(data))
		binary.BigEndian.PutUint16(sll[14:], etherType)
		sll = append(sll, data...)
		if ks, errs := flowaddr.ParseLinuxSLL(sll); ks != k || errs != err {
			t.Fatalf("ParseLinuxSLL %v, %v; Parse %v, %v", fmtKey(ks), errs, fmtKey(k), err)
		}
		if err != nil {
			return
		}

		// Bytes after the packet's own length are ignored, unless its
		// length field is 0 and means "the rest of the buffer".
		if (version == 4 && len(data) >= 4 && binary.BigEndian.Uint16(data[2:]) != 0) ||
			(version == 6 && len(data) >= 40 && binary.BigEndian.Uint16(data[4:]) != 0) {
			padded := append(append([]byte(nil), data...), 0x45, 0, 0, 0x60)
			if kp, errp := flowaddr.Parse(padded); kp != k || errp != nil {
				t.Fatalf("trailing bytes changed the key: %v then %v, %v", fmtKey(k), fmtKey(kp), errp)
			}
		}

		// Inside an IPv6 tunnel the innermost flow is the same, unless the
		// tunnel header is one too many.
		tunnel := make([]byte, 40, 40+len(data))
		tunnel[0] = 0x60
		binary.BigEndian.PutUint16(tunnel[4:], uint16(len(data)))
		tunnel[6] = 41
		if version == 4 {
			tunnel[6] = 4
		}
		tunnel[8], tunnel[24] = 0x20, 0x20
		tunnel = append(tunnel, data...)
		if kt, errt := flowaddr.Parse(tunnel); errt != flowaddr.ErrDepth && (kt != k || errt != nil) {
			t.Fatalf("in a tunnel: %v, %v; alone %v", fmtKey(kt), errt, fmtKey(k))
		}
	})
}

// FuzzParseEthernet checks ParseEthernet on any input, and that a frame
// without tags gives what Parse gives for its payload.
func FuzzParseEthernet(f *testing.F) {
	for _, s := range fuzzSeeds(true) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		k, err := checkParser(t, "ParseEthernet", flowaddr.ParseEthernet, frame)
		checkParser(t, "ParseLinuxSLL", flowaddr.ParseLinuxSLL, frame)
		if len(frame) <= 14 {
			return
		}
		et, version := binary.BigEndian.Uint16(frame[12:]), frame[14]>>4
		if (et == 0x0800 && version == 4) || (et == 0x86dd && version == 6) {
			if kp, errp := flowaddr.Parse(frame[14:]); kp != k || errp != err {
				t.Fatalf("ParseEthernet %v, %v; Parse of the payload %v, %v", fmtKey(k), err, fmtKey(kp), errp)
			}
		}
	})
}
