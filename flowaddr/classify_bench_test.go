package flowaddr_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/testutil"
)

// classifier is the whole per-packet work of a sender: parse the inner
// packet, hash its key, map the hash to an outer address. It goes through
// the hash.Hasher interface, as conn does with its hash.Policy.
type classifier struct {
	hasher hash.Hasher
	mapper *flowaddr.Mapper
}

func newClassifier(tb testing.TB) classifier {
	key, err := hash.ParseKey("000102030405060708090a0b0c0d0e0f")
	if err != nil {
		tb.Fatal(err)
	}
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:a::/64")})
	if err != nil {
		tb.Fatal(err)
	}
	return classifier{hasher: hash.NewSipHash24(key), mapper: m}
}

// putAddr writes the outer address of k's flow into *a. It takes the key
// by pointer, as conn's Classify hashes it: a Key passed by value is copied
// into the call's arguments, and that copy's overlapping 16-byte loads
// stall on the stores of the copy before it. It maps with AddrWords, the
// per-packet form of Addr16, and stores the two halves where the address
// goes, as a sender writes it into a socket address or control message: a
// returned [16]byte would be reloaded with a 16-byte load that spans those
// two stores and stalls.
func (c classifier) putAddr(a *[16]byte, k *flowaddr.Key) {
	hi, lo := c.mapper.AddrWords(c.mapper.Bucket(c.hasher.Sum64(k.Bytes())))
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
}

// addr returns the address putAddr writes.
func (c classifier) addr(k *flowaddr.Key) (a [16]byte) {
	c.putAddr(&a, k)
	return a
}

var sinkAddr [16]byte

// BenchmarkClassify measures parse + hash + map, parsing with ParseInto
// as conn's Classify does; BenchmarkGopacketClassify does the same with
// gopacket's DecodingLayerParser doing the parsing, on the same packets,
// so one run prints both.
func BenchmarkClassify(b *testing.B) {
	c := newClassifier(b)
	for _, bp := range testutil.BenchPackets() {
		b.Run(bp.Name, func(b *testing.B) {
			b.ReportAllocs()
			var a [16]byte
			var k flowaddr.Key
			for b.Loop() {
				flowaddr.ParseInto(&k, bp.Data)
				c.putAddr(&a, &k)
			}
			sinkAddr = a
		})
	}
}

func BenchmarkGopacketClassify(b *testing.B) {
	c := newClassifier(b)
	p := newGopacketParser()
	for _, bp := range testutil.BenchPackets() {
		b.Run(bp.Name, func(b *testing.B) {
			b.ReportAllocs()
			var a [16]byte
			for b.Loop() {
				k := gopacketExtract(p, bp.Data)
				c.putAddr(&a, &k)
			}
			sinkAddr = a
		})
	}
}

func TestClassifyAgreesWithGopacketOnBenchPackets(t *testing.T) {
	c := newClassifier(t)
	p := newGopacketParser()
	for _, bp := range testutil.BenchPackets() {
		k, err := flowaddr.Parse(bp.Data)
		if err != nil {
			t.Fatalf("%s: %v", bp.Name, err)
		}
		if g := gopacketExtract(p, bp.Data); g != k {
			t.Errorf("%s: Parse gives %+v, gopacket %+v: the benchmarks would compare unlike work", bp.Name, k, g)
		}
		if a := netip.AddrFrom16(c.addr(&k)); !c.mapper.Prefix().Contains(a) {
			t.Errorf("%s: address %v outside %v", bp.Name, a, c.mapper.Prefix())
		}
	}
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	c := newClassifier(t)
	for _, bp := range testutil.BenchPackets() {
		allocs := testing.AllocsPerRun(100, func() {
			k, _ := flowaddr.Parse(bp.Data)
			k = k.Canonical()
			sinkAddr = c.addr(&k)
		})
		if allocs != 0 {
			t.Errorf("%s: parse + hash + map allocates %v times per packet, want 0", bp.Name, allocs)
		}
	}
}
