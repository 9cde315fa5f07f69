package flowaddr

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/dchest/siphash"
)

var testPermKey = [16]byte{0x5e, 0xc7, 0xe7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}

func mustMapper(t testing.TB, cfg MapperConfig) *Mapper {
	t.Helper()
	m, err := NewMapper(cfg)
	if err != nil {
		t.Fatalf("NewMapper(%+v): %v", cfg, err)
	}
	return m
}

func addr16(s string) [16]byte { return netip.MustParseAddr(s).As16() }

func addrSlice(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func TestNewMapperConfig(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		cfg     MapperConfig
		wantErr string // substring of the error; "" means valid
		// For valid configs: the expected Bits and bucket 0's address
		// (contiguous only; "" skips the check).
		bits  int
		first string
	}{
		{name: "default /64", cfg: MapperConfig{Prefix: p("2001:db8:1:2::/64")}, bits: 10, first: "2001:db8:1:2::400"},
		{name: "unmasked prefix", cfg: MapperConfig{Prefix: p("2001:db8:1:2::99/64")}, bits: 10, first: "2001:db8:1:2::400"},
		{name: "bits 1", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 1}, bits: 1, first: "2001:db8::2"},
		{name: "bits 32", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 32}, bits: 32, first: "2001:db8::1:0:0"},
		{name: "/48", cfg: MapperConfig{Prefix: p("2001:db8:a::/48"), Bits: 12}, bits: 12, first: "2001:db8:a::1000"},
		{name: "/126 bits 1", cfg: MapperConfig{Prefix: p("2001:db8::4/126"), Bits: 1}, bits: 1, first: "2001:db8::6"},
		{name: "/120 bits 7", cfg: MapperConfig{Prefix: p("2001:db8::100/120"), Bits: 7}, bits: 7, first: "2001:db8::180"},
		{name: "first set", cfg: MapperConfig{Prefix: p("2001:db8::/96"), Bits: 4, First: a("2001:db8::1:0")}, bits: 4, first: "2001:db8::1:0"},
		{name: "first unaligned", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 10, First: a("2001:db8::1")}, bits: 10, first: "2001:db8::1"},
		{name: "first at the end", cfg: MapperConfig{Prefix: p("2001:db8::/120"), Bits: 4, First: a("2001:db8::f0")}, bits: 4, first: "2001:db8::f0"},
		{name: "first below RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 7, First: a("2001:db8::fdff:ffff:ffff:ff00")}, bits: 7, first: "2001:db8::fdff:ffff:ffff:ff00"},
		{name: "first above RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 8, First: a("2001:db8::fe00:0:0:0")}, bits: 8, first: "2001:db8::fe00:0:0:0"},
		{name: "scattered /64", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Layout: LayoutScattered, PermKey: testPermKey}, bits: 10},
		{name: "scattered /32 bits 32", cfg: MapperConfig{Prefix: p("2001:db8::/32"), Bits: 32, Layout: LayoutScattered}, bits: 32},
		{name: "scattered /126", cfg: MapperConfig{Prefix: p("2001:db8::/126"), Bits: 1, Layout: LayoutScattered}, bits: 1},
		{name: "scattered around RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::fdff:ffff:ffff:ff00/120"), Bits: 6, Layout: LayoutScattered}, bits: 6},

		{name: "no prefix", cfg: MapperConfig{}, wantErr: "prefix is not set"},
		{name: "IPv4 prefix", cfg: MapperConfig{Prefix: p("192.0.2.0/24")}, wantErr: "is IPv4"},
		{name: "v4-mapped prefix", cfg: MapperConfig{Prefix: p("::ffff:192.0.2.0/120")}, wantErr: "v4-mapped"},
		{name: "v4-mapped supernet", cfg: MapperConfig{Prefix: p("::/64")}, wantErr: "v4-mapped"},
		{name: "multicast prefix", cfg: MapperConfig{Prefix: p("ff02::/64")}, wantErr: "multicast"},
		{name: "prefix over multicast", cfg: MapperConfig{Prefix: p("8000::/1")}, wantErr: "multicast"},
		{name: "/127", cfg: MapperConfig{Prefix: p("2001:db8::/127")}, wantErr: "has 1 host bits"},
		{name: "/128", cfg: MapperConfig{Prefix: p("2001:db8::1/128")}, wantErr: "has 0 host bits"},
		{name: "bits negative", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: -1}, wantErr: "bits -1 out of range: prefix 2001:db8::/64 allows 1..32 (MaxBits)"},
		{name: "bits 33", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 33}, wantErr: "bits 33 out of range"},
		{name: "bits equal host bits", cfg: MapperConfig{Prefix: p("2001:db8::/120"), Bits: 8}, wantErr: "allows 1..7 (one less than its 8 host bits"},
		{name: "default bits too many", cfg: MapperConfig{Prefix: p("2001:db8::/120")}, wantErr: "the default bits 10 out of range"},
		{name: "unknown layout", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Layout: 7}, wantErr: "unknown layout 7"},
		{name: "first outside prefix", cfg: MapperConfig{Prefix: p("2001:db8::/64"), First: a("2001:db8:1::400")}, wantErr: "not an address inside prefix"},
		{name: "first IPv4", cfg: MapperConfig{Prefix: p("2001:db8::/64"), First: a("192.0.2.1")}, wantErr: "not an address inside prefix"},
		{name: "first with zone", cfg: MapperConfig{Prefix: p("2001:db8::/64"), First: a("2001:db8::400%eth0")}, wantErr: "not an address inside prefix"},
		{name: "range past prefix end", cfg: MapperConfig{Prefix: p("2001:db8::/120"), Bits: 4, First: a("2001:db8::f1")}, wantErr: "First may be at most 2001:db8::f0"},
		{name: "range past a short prefix's end", cfg: MapperConfig{Prefix: p("fe80::/10"), Bits: 4, First: a("febf:ffff:ffff:ffff:ffff:ffff:ffff:fff1")}, wantErr: "run past the end"},
		{name: "first is subnet-router anycast", cfg: MapperConfig{Prefix: p("2001:db8::/64"), First: a("2001:db8::")}, wantErr: "reserved anycast"},
		{name: "range crosses a /64", cfg: MapperConfig{Prefix: p("2001:db8::/56"), First: a("2001:db8:0:1:ffff:ffff:ffff:ff00")}, wantErr: "reserved anycast"},
		{name: "range reaches RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 8, First: a("2001:db8::fdff:ffff:ffff:ff00")}, wantErr: "reserved anycast"},
		{name: "range inside RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Bits: 2, First: a("2001:db8::fdff:ffff:ffff:ffa0")}, wantErr: "reserved anycast"},
		{name: "default range is RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::fdff:ffff:ffff:ff00/120"), Bits: 7}, wantErr: "default range 2001:db8::fdff:ffff:ffff:ff80-2001:db8::fdff:ffff:ffff:ffff"},
		{name: "first with scattered", cfg: MapperConfig{Prefix: p("2001:db8::/64"), Layout: LayoutScattered, First: a("2001:db8::400")}, wantErr: "only to the contiguous layout"},
		{name: "scattered short of addresses", cfg: MapperConfig{Prefix: p("2001:db8::fdff:ffff:ffff:ff00/120"), Bits: 7, Layout: LayoutScattered}, wantErr: "has only 127 addresses"},
		{name: "scattered prefix inside RFC 2526 block", cfg: MapperConfig{Prefix: p("2001:db8::fdff:ffff:ffff:ffc0/122"), Bits: 1, Layout: LayoutScattered}, wantErr: "has only 0 addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMapper(tt.cfg)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("NewMapper succeeded, want error containing %q", tt.wantErr)
				}
				if !errors.Is(err, ErrMapperConfig) {
					t.Errorf("error %q does not wrap ErrMapperConfig", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				if m != nil {
					t.Errorf("NewMapper returned a Mapper with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("NewMapper: %v", err)
			}
			if m.Bits() != tt.bits || m.Len() != 1<<tt.bits {
				t.Errorf("Bits() = %d, Len() = %d, want %d, %d", m.Bits(), m.Len(), tt.bits, 1<<tt.bits)
			}
			if want := tt.cfg.Prefix.Masked(); m.Prefix() != want {
				t.Errorf("Prefix() = %s, want %s", m.Prefix(), want)
			}
			if m.Layout() != tt.cfg.Layout {
				t.Errorf("Layout() = %s, want %s", m.Layout(), tt.cfg.Layout)
			}
			if tt.first != "" {
				if got := netip.AddrFrom16(m.Addr16(0)); got != a(tt.first) {
					t.Errorf("Addr16(0) = %s, want %s", got, tt.first)
				}
			}
		})
	}
}

func TestLayoutString(t *testing.T) {
	for l, want := range map[Layout]string{LayoutContiguous: "contiguous", LayoutScattered: "scattered", 9: "Layout(9)"} {
		if got := l.String(); got != want {
			t.Errorf("Layout(%d).String() = %q, want %q", uint8(l), got, want)
		}
	}
}

func TestMapperContiguousAddresses(t *testing.T) {
	m := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:1:2::/64")})
	tests := []struct {
		name   string
		hash   uint64
		bucket uint32
		addr   string
	}{
		{"zero hash", 0, 0, "2001:db8:1:2::400"},
		{"low bits ignored", 1<<54 - 1, 0, "2001:db8:1:2::400"},
		{"lowest top bit", 1 << 54, 1, "2001:db8:1:2::401"},
		{"half", 1 << 63, 512, "2001:db8:1:2::600"},
		{"all ones", math.MaxUint64, 1023, "2001:db8:1:2::7ff"},
		{"mixed", 0xdead_beef_0000_0000, 0x37a, "2001:db8:1:2::77a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b := m.Bucket(tt.hash); b != tt.bucket {
				t.Errorf("Bucket(%#x) = %d, want %d", tt.hash, b, tt.bucket)
			}
			want := netip.MustParseAddr(tt.addr)
			if got := m.Addr(tt.hash); got != want {
				t.Errorf("Addr(%#x) = %s, want %s", tt.hash, got, want)
			}
			if got := m.Addr16(tt.bucket); got != want.As16() {
				t.Errorf("Addr16(%d) = %s, want %s", tt.bucket, netip.AddrFrom16(got), want)
			}
			w16 := want.As16()
			if hi, lo := m.AddrWords(tt.bucket); hi != binary.BigEndian.Uint64(w16[:8]) || lo != binary.BigEndian.Uint64(w16[8:]) {
				t.Errorf("AddrWords(%d) = %#x, %#x, want %s", tt.bucket, hi, lo, want)
			}
			if b, ok := m.BucketOf(want.As16()); !ok || b != tt.bucket {
				t.Errorf("BucketOf(%s) = %d, %v, want %d, true", want, b, ok, tt.bucket)
			}
		})
	}
	// Bits of a bucket above Bits are ignored.
	if got, want := m.Addr16(1024+5), addr16("2001:db8:1:2::405"); got != want {
		t.Errorf("Addr16(1029) = %s, want %s", netip.AddrFrom16(got), netip.AddrFrom16(want))
	}
	if _, lo := m.AddrWords(1024 + 5); lo != 0x405 {
		t.Errorf("AddrWords(1029) low half = %#x, want 0x405", lo)
	}
}

// TestMapperAddrWordsScattered checks AddrWords of the scattered layout
// against addresses fixed for this key (as ExampleNewMapper_scattered).
func TestMapperAddrWordsScattered(t *testing.T) {
	m := mustMapper(t, MapperConfig{
		Prefix:  netip.MustParsePrefix("2001:db8:1::/48"),
		Layout:  LayoutScattered,
		PermKey: [16]byte{0: 1, 15: 2},
	})
	want := [][2]uint64{
		{0x20010db80001e1a9, 0x7d12c7c749deee13},
		{0x20010db80001eac4, 0x7f39fc9e5716fac6},
	}
	for b, w := range want {
		if hi, lo := m.AddrWords(uint32(b)); hi != w[0] || lo != w[1] {
			t.Errorf("AddrWords(%d) = %#x, %#x, want %#x, %#x", b, hi, lo, w[0], w[1])
		}
	}
}

// reservedAddr is the reference for the addresses no layout may yield,
// written from RFC 4291 section 2.6.1 and RFC 2526 independently of
// Mapper.reserved.
func reservedAddr(p netip.Prefix, a netip.Addr) bool {
	if a == p.Masked().Addr() {
		return true // the prefix's Subnet-Router anycast address
	}
	b := a.As16()
	iid := [8]byte(b[8:])
	if iid == [8]byte{} {
		return true // a /64's Subnet-Router anycast address
	}
	return [7]byte(iid[:7]) == [7]byte{0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} && iid[7] >= 0x80
}

// mapperCases are the prefixes and bits every layout is checked with.
var mapperCases = []struct {
	prefix string
	bits   int
}{
	{"2001:db8:a::/48", 10},
	{"2001:db8:b:ab00::/56", 10},
	{"2001:db8:c:d::/64", 10},
	{"2001:db8:c:d:e:f::/96", 10},
	{"2001:db8::fdff:ffff:ffff:0/112", 10}, // holds the RFC 2526 block
	{"2001:db8:c:d::ab00/120", 7},          // 8 host bits: 7 is the most bits allowed
	{"2001:db8::fdff:ffff:ffff:ff00/120", 6},
	{"2001:db8:c:d::400/118", 9},
	{"2001:db8:c:d::800/117", 10}, // 11 host bits: half the addresses are used
	{"2001:db8::/32", 10},
}

// TestMapperRoundTrip checks every bucket of every case in both layouts:
// its address lies in the prefix, is not reserved, differs from every other
// bucket's, and maps back to the bucket.
func TestMapperRoundTrip(t *testing.T) {
	for _, layout := range []Layout{LayoutContiguous, LayoutScattered} {
		for _, c := range mapperCases {
			cfg := MapperConfig{Prefix: netip.MustParsePrefix(c.prefix), Bits: c.bits, Layout: layout, PermKey: testPermKey}
			t.Run(layout.String()+"/"+c.prefix, func(t *testing.T) {
				m := mustMapper(t, cfg)
				seen := make(map[netip.Addr]uint32, m.Len())
				for b := range uint32(m.Len()) {
					a16 := m.Addr16(b)
					a := netip.AddrFrom16(a16)
					if !cfg.Prefix.Contains(a) {
						t.Fatalf("bucket %d: %s is outside %s", b, a, cfg.Prefix)
					}
					if reservedAddr(cfg.Prefix, a) {
						t.Fatalf("bucket %d: %s is reserved", b, a)
					}
					if other, dup := seen[a]; dup {
						t.Fatalf("buckets %d and %d share %s", other, b, a)
					}
					seen[a] = b
					if got, ok := m.BucketOf(a16); !ok || got != b {
						t.Fatalf("BucketOf(%s) = %d, %v, want %d, true", a, got, ok, b)
					}
					if m.Addr16(b) != a16 {
						t.Fatalf("Addr16(%d) changed between calls", b)
					}
				}
			})
		}
	}
}

// TestMapperBucketOfExhaustive checks BucketOf on every address of small
// prefixes: it accepts exactly the Len() addresses that Addr16 yields.
func TestMapperBucketOfExhaustive(t *testing.T) {
	for _, layout := range []Layout{LayoutContiguous, LayoutScattered} {
		for _, c := range mapperCases {
			cfg := MapperConfig{Prefix: netip.MustParsePrefix(c.prefix), Bits: c.bits, Layout: layout, PermKey: testPermKey}
			if cfg.Prefix.Bits() < 112 {
				continue
			}
			t.Run(layout.String()+"/"+c.prefix, func(t *testing.T) {
				m := mustMapper(t, cfg)
				accepted := 0
				for a := cfg.Prefix.Addr(); cfg.Prefix.Contains(a); a = a.Next() {
					b, ok := m.BucketOf(a.As16())
					if !ok {
						continue
					}
					accepted++
					if got := netip.AddrFrom16(m.Addr16(b)); got != a {
						t.Fatalf("BucketOf(%s) = %d, but Addr16(%d) = %s", a, b, b, got)
					}
				}
				if accepted != m.Len() {
					t.Errorf("BucketOf accepted %d addresses, want %d", accepted, m.Len())
				}
			})
		}
	}
}

func TestMapperBucketOfRejects(t *testing.T) {
	contiguous := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:1:2::/64")})
	scattered := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:1:2::/64"), Layout: LayoutScattered, PermKey: testPermKey})
	tests := []struct {
		name string
		m    *Mapper
		addr string
	}{
		{"contiguous: before the range", contiguous, "2001:db8:1:2::3ff"},
		{"contiguous: after the range", contiguous, "2001:db8:1:2::800"},
		{"contiguous: subnet-router anycast", contiguous, "2001:db8:1:2::"},
		{"contiguous: other prefix, same host part", contiguous, "2001:db8:1:3::400"},
		{"contiguous: far below", contiguous, "::400"},
		{"contiguous: far above", contiguous, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"scattered: subnet-router anycast", scattered, "2001:db8:1:2::"},
		{"scattered: RFC 2526 anycast", scattered, "2001:db8:1:2:fdff:ffff:ffff:ffff"},
		{"scattered: other prefix", scattered, "2001:db8:1:3::1"},
		{"scattered: contiguous address", scattered, "2001:db8:1:2::400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, ok := tt.m.BucketOf(addr16(tt.addr)); ok {
				t.Errorf("BucketOf(%s) = %d, true, want false", tt.addr, b)
			}
		})
	}
	// The scattered layout's address of a bucket moved to another prefix
	// must not be accepted.
	a := scattered.Addr16(7)
	a[7] ^= 1
	if b, ok := scattered.BucketOf(a); ok {
		t.Errorf("BucketOf(%s) = %d, true for an address outside the prefix", netip.AddrFrom16(a), b)
	}
}

// TestMapperScatteredSpread checks that the scattered layout uses the
// whole host part: the 1024 addresses of a /48 fall into (nearly) 1024
// different /64s, and the high host bits of a /64's addresses are uniform
// (chi-square at significance 0.001).
func TestMapperScatteredSpread(t *testing.T) {
	m48 := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:a::/48"), Layout: LayoutScattered, PermKey: testPermKey})
	subnets := make(map[[8]byte]bool)
	for b := range uint32(m48.Len()) {
		a := m48.Addr16(b)
		subnets[[8]byte(a[:8])] = true
	}
	// 1024 values over 65536 /64s collide about 8 times.
	if len(subnets) < 990 {
		t.Errorf("scattered /48: 1024 addresses in only %d /64s", len(subnets))
	}

	for i := range 4 {
		key := testPermKey
		key[0] = byte(i)
		m := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8::/64"), Layout: LayoutScattered, PermKey: key})
		var counts [16]int
		for b := range uint32(m.Len()) {
			a := m.Addr16(b)
			counts[a[8]>>4]++
		}
		chi2, crit := chiSquare(counts[:]), chiSquareCritical(len(counts)-1, 0.001)
		if chi2 > crit {
			t.Errorf("key %d: top 4 host bits of the addresses not uniform: chi-square %.1f > %.1f, counts %v", i, chi2, crit, counts)
		}
	}
}

// TestMapperKeys checks that the permutation depends on the key, and that
// two mappers built from one configuration agree.
func TestMapperKeys(t *testing.T) {
	cfg := MapperConfig{Prefix: netip.MustParsePrefix("2001:db8::/64"), Layout: LayoutScattered, PermKey: testPermKey}
	m1, m2 := mustMapper(t, cfg), mustMapper(t, cfg)
	cfg.PermKey[15] ^= 1
	other := mustMapper(t, cfg)
	same := 0
	for b := range uint32(m1.Len()) {
		if m1.Addr16(b) != m2.Addr16(b) {
			t.Fatalf("two mappers of one configuration disagree on bucket %d", b)
		}
		if m1.Addr16(b) == other.Addr16(b) {
			same++
		}
	}
	if same > 0 {
		t.Errorf("a one-bit key change kept %d of %d addresses", same, m1.Len())
	}
}

// TestPermutation checks the Feistel network exhaustively for small
// widths (a bijection, inverted by inverse) and on random values for wide
// ones (results stay inside the width).
func TestPermutation(t *testing.T) {
	for w := uint(2); w <= 16; w++ {
		p := newPermutation(testPermKey, w)
		size := uint64(1) << w
		seen := make([]bool, size)
		fixed := 0
		for x := range size {
			hi, y := p.forward(0, x)
			if hi != 0 || y >= size {
				t.Fatalf("width %d: forward(%d) = %d:%d, outside the width", w, x, hi, y)
			}
			if seen[y] {
				t.Fatalf("width %d: forward(%d) = %d repeats a value", w, x, y)
			}
			seen[y] = true
			if y == x {
				fixed++
			}
			if hi, back := p.inverse(0, y); hi != 0 || back != x {
				t.Fatalf("width %d: inverse(forward(%d)) = %d:%d", w, x, hi, back)
			}
		}
		if w >= 8 && fixed > 8 {
			t.Errorf("width %d: %d fixed points, a random permutation has about one", w, fixed)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, w := range []uint{31, 32, 33, 63, 64, 65, 96, 127, 128} {
		p := newPermutation(testPermKey, w)
		hiMask, loMask := uint64(0), lowMask(min(w, 64))
		if w > 64 {
			hiMask = lowMask(w - 64)
		}
		for range 1000 {
			hi, lo := rng.Uint64()&hiMask, rng.Uint64()&loMask
			yHi, yLo := p.forward(hi, lo)
			if yHi&^hiMask != 0 || yLo&^loMask != 0 {
				t.Fatalf("width %d: forward(%x:%x) = %x:%x, outside the width", w, hi, lo, yHi, yLo)
			}
			if bHi, bLo := p.inverse(yHi, yLo); bHi != hi || bLo != lo {
				t.Fatalf("width %d: inverse(forward(%x:%x)) = %x:%x", w, hi, lo, bHi, bLo)
			}
		}
	}
}

// chiSquare returns Pearson's statistic of counts against a uniform
// distribution.
func chiSquare(counts []int) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	expected := float64(total) / float64(len(counts))
	chi2 := 0.0
	for _, c := range counts {
		d := float64(c) - expected
		chi2 += d * d / expected
	}
	return chi2
}

// chiSquareCritical returns the value that a chi-square variable with df
// degrees of freedom exceeds with probability alpha, by the
// Wilson-Hilferty approximation: (X/df)^(1/3) is close to normal with mean
// 1 - 2/(9df) and variance 2/(9df). For df = 1023 and alpha = 0.001 it
// gives 1168.5 (tables: 1168.49); for df = 15, 37.7 (tables: 37.70).
func chiSquareCritical(df int, alpha float64) float64 {
	z := math.Sqrt2 * math.Erfinv(1-2*alpha) // the normal quantile 1 - alpha
	v := 2 / (9 * float64(df))
	return float64(df) * math.Pow(1-v+z*math.Sqrt(v), 3)
}

func TestChiSquareCritical(t *testing.T) {
	// Reference values from chi-square tables.
	for _, tt := range []struct {
		df   int
		want float64
	}{{15, 37.697}, {100, 149.449}, {1023, 1168.49}} {
		if got := chiSquareCritical(tt.df, 0.001); math.Abs(got-tt.want) > 0.01*tt.want {
			t.Errorf("chiSquareCritical(%d, 0.001) = %.3f, want %.3f", tt.df, got, tt.want)
		}
	}
}

// TestMapperUniformity hashes 10^6 random flow keys with SipHash-2-4 and
// checks that the 1024 buckets fill uniformly: Pearson's chi-square
// statistic against the critical value at significance 0.001 for 1023
// degrees of freedom (Wilson-Hilferty, see chiSquareCritical). A fixed
// seed makes the test deterministic.
func TestMapperUniformity(t *testing.T) {
	const keys = 1_000_000
	for _, layout := range []Layout{LayoutContiguous, LayoutScattered} {
		t.Run(layout.String(), func(t *testing.T) {
			m := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8::/64"), Layout: layout, PermKey: testPermKey})
			rng := rand.New(rand.NewPCG(0x5eed, uint64(layout)))
			k0, k1 := rng.Uint64(), rng.Uint64()
			counts := make([]int, m.Len())
			var in [KeyLen]byte
			for range keys {
				for i := 0; i < len(in); i += 8 {
					binary.LittleEndian.PutUint64(in[min(i, len(in)-8):], rng.Uint64())
				}
				counts[m.Bucket(siphash.Hash(k0, k1, in[:]))]++
			}
			chi2, crit := chiSquare(counts), chiSquareCritical(m.Len()-1, 0.001)
			t.Logf("chi-square %.1f, critical %.1f", chi2, crit)
			if chi2 > crit {
				t.Errorf("buckets not uniform: chi-square %.1f > critical %.1f (1023 df, significance 0.001)", chi2, crit)
			}
			// Each bucket's address maps back to it, so the addresses are
			// exactly as uniform as the buckets.
			for range 1000 {
				h := rng.Uint64()
				if b, ok := m.BucketOf(m.Addr(h).As16()); !ok || b != m.Bucket(h) {
					t.Fatalf("BucketOf(Addr(%#x)) = %d, %v, want %d, true", h, b, ok, m.Bucket(h))
				}
			}
		})
	}
}

func TestMapperConcurrent(t *testing.T) {
	m := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8::/64"), Layout: LayoutScattered, PermKey: testPermKey})
	want := make([][16]byte, m.Len())
	for b := range want {
		want[b] = m.Addr16(uint32(b))
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := range 4 {
		wg.Go(func() {
			for b := range want {
				b = (b + g*256) % len(want)
				if m.Addr16(uint32(b)) != want[b] {
					errs <- "Addr16 differs under concurrent use"
					return
				}
				if got, ok := m.BucketOf(want[b]); !ok || int(got) != b {
					errs <- "BucketOf differs under concurrent use"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestMapperAllocs(t *testing.T) {
	for _, layout := range []Layout{LayoutContiguous, LayoutScattered} {
		t.Run(layout.String(), func(t *testing.T) {
			m := mustMapper(t, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8::/64"), Layout: layout, PermKey: testPermKey})
			h := uint64(0x0123_4567_89ab_cdef)
			a := m.Addr16(m.Bucket(h))
			var sink uint32
			allocs := testing.AllocsPerRun(100, func() {
				h = h*6364136223846793005 + 1
				b := m.Bucket(h)
				a = m.Addr16(b)
				hi, lo := m.AddrWords(b)
				sink += uint32(hi ^ lo)
				_ = m.Addr(h)
				got, _ := m.BucketOf(a)
				sink += got
			})
			if allocs != 0 {
				t.Errorf("Bucket+Addr16+AddrWords+Addr+BucketOf: %v allocations per run, want 0", allocs)
			}
			_ = sink
		})
	}
}

func BenchmarkMapper(b *testing.B) {
	for _, layout := range []Layout{LayoutContiguous, LayoutScattered} {
		m := mustMapper(b, MapperConfig{Prefix: netip.MustParsePrefix("2001:db8::/64"), Layout: layout, PermKey: testPermKey})
		addrs := make([][16]byte, m.Len())
		for i := range addrs {
			addrs[i] = m.Addr16(uint32(i))
		}
		b.Run(layout.String()+"/Addr16", func(b *testing.B) {
			b.ReportAllocs()
			var sink byte
			i := uint32(0)
			for b.Loop() {
				a := m.Addr16(i)
				sink ^= a[15]
				i++
			}
			_ = sink
		})
		b.Run(layout.String()+"/AddrWords", func(b *testing.B) {
			b.ReportAllocs()
			var sink uint64
			i := uint32(0)
			for b.Loop() {
				_, lo := m.AddrWords(i)
				sink ^= lo
				i++
			}
			_ = sink
		})
		b.Run(layout.String()+"/BucketOf", func(b *testing.B) {
			b.ReportAllocs()
			var sink uint32
			i := 0
			for b.Loop() {
				got, _ := m.BucketOf(addrs[i&(len(addrs)-1)])
				sink += got
				i++
			}
			_ = sink
		})
	}
}

// FuzzMapper builds mappers from arbitrary configurations and checks them
// on arbitrary addresses: NewMapper and the methods never panic, an
// accepted configuration maps a bucket to an unreserved address inside the
// prefix and back, and BucketOf accepts only addresses that Addr16 yields.
func FuzzMapper(f *testing.F) {
	pfx := addr16("2001:db8:1:2::")
	f.Add(pfx[:], uint8(64), uint8(10), uint8(0), []byte{}, uint32(5), addrSlice("2001:db8:1:2::405"))
	f.Add(pfx[:], uint8(48), uint8(12), uint8(1), []byte{}, uint32(77), addrSlice("2001:db8:1:2::1"))
	f.Add(pfx[:], uint8(120), uint8(7), uint8(1), []byte{}, uint32(1), addrSlice("2001:db8:1:2::80"))
	f.Add(pfx[:], uint8(96), uint8(4), uint8(0), addrSlice("2001:db8:1:2::1:0"), uint32(15), addrSlice("2001:db8:1:2::1:f"))
	f.Fuzz(func(t *testing.T, prefix []byte, length, bitsIn, layout uint8, first []byte, bucket uint32, addr []byte) {
		if len(prefix) != 16 || len(addr) != 16 {
			return
		}
		cfg := MapperConfig{
			Prefix:  netip.PrefixFrom(netip.AddrFrom16([16]byte(prefix)), int(length)),
			Bits:    int(bitsIn),
			Layout:  Layout(layout),
			PermKey: testPermKey,
		}
		if len(first) == 16 {
			cfg.First = netip.AddrFrom16([16]byte(first))
		}
		m, err := NewMapper(cfg)
		if err != nil {
			if !errors.Is(err, ErrMapperConfig) {
				t.Fatalf("NewMapper error %q does not wrap ErrMapperConfig", err)
			}
			return
		}
		a16 := m.Addr16(bucket)
		a := netip.AddrFrom16(a16)
		b := bucket & uint32(m.Len()-1)
		if !m.Prefix().Contains(a) || reservedAddr(m.Prefix(), a) {
			t.Fatalf("%+v: bucket %d maps to %s: outside the prefix or reserved", cfg, b, a)
		}
		if got, ok := m.BucketOf(a16); !ok || got != b {
			t.Fatalf("%+v: BucketOf(Addr16(%d) = %s) = %d, %v", cfg, b, a, got, ok)
		}
		if got, ok := m.BucketOf([16]byte(addr)); ok && m.Addr16(got) != [16]byte(addr) {
			t.Fatalf("%+v: BucketOf(%s) = %d, but Addr16(%d) = %s", cfg, netip.AddrFrom16([16]byte(addr)), got, got, netip.AddrFrom16(m.Addr16(got)))
		}
	})
}
