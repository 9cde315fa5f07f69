package flowaddr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
)

// DefaultBits is the number of address bits a [Mapper] uses when
// [MapperConfig.Bits] is 0: 2^10 = 1024 addresses, as many as fq_codel has
// queues by default.
const DefaultBits = 10

// MaxBits bounds [MapperConfig.Bits]: at most 2^32 addresses per prefix.
const MaxBits = 32

// ErrMapperConfig is wrapped by every error [NewMapper] returns; the
// wrapping error says what is wrong and which values are allowed.
var ErrMapperConfig = errors.New("flowaddr: invalid mapper configuration")

// Layout says where in the prefix a [Mapper] puts its 2^Bits addresses.
type Layout uint8

const (
	// LayoutContiguous puts the addresses in one run: bucket b gets
	// First + b. It is the zero value and the fastest layout, and the run
	// is easy to name in a firewall rule.
	LayoutContiguous Layout = iota
	// LayoutScattered spreads the addresses over the whole prefix with a
	// keyed permutation (see [MapperConfig.PermKey]), so that the set in
	// use cannot be told from the prefix alone.
	LayoutScattered
)

// String returns "contiguous" or "scattered".
func (l Layout) String() string {
	switch l {
	case LayoutContiguous:
		return "contiguous"
	case LayoutScattered:
		return "scattered"
	}
	return fmt.Sprintf("Layout(%d)", uint8(l))
}

// MapperConfig configures [NewMapper].
type MapperConfig struct {
	// Prefix is the IPv6 prefix the addresses are taken from, normally a
	// prefix routed to this host (see the package doc). Host bits set in
	// it are ignored. The prefix must leave more than Bits host bits, and
	// must not be v4-mapped or overlap the multicast range ff00::/8.
	Prefix netip.Prefix

	// Bits sets the number of addresses, 2^Bits, in 1..MaxBits and below
	// the prefix's host bits (128 - Prefix.Bits()): a /120 takes at most
	// 7. 0 means DefaultBits.
	Bits int

	// Layout picks where the addresses lie; the zero value is
	// LayoutContiguous.
	Layout Layout

	// First is the first address of the contiguous layout's run of 2^Bits
	// addresses; the run must lie inside Prefix and hold no reserved
	// address (see [Mapper]). The zero Addr picks the default: the host
	// part 2^Bits, so the run is an aligned block of 2^Bits addresses right
	// above the low addresses that hosts and routers usually hold (::1,
	// ::2, ...). Setting First with LayoutScattered is an error.
	First netip.Addr

	// PermKey keys the scattered layout's permutation. Both tunnel ends
	// must use the same key to agree on the addresses. Any value works,
	// but the all-zero key is public knowledge: use a random shared
	// secret when the scattering should hide the address set. The
	// contiguous layout ignores it.
	PermKey [16]byte
}

// Mapper maps a flow hash to one of 2^Bits addresses inside an IPv6
// prefix, and an address back to its bucket.
//
// The top Bits bits of a hash select a bucket; the layout turns the bucket
// into an address. No layout ever yields a reserved address: the
// Subnet-Router anycast address of the prefix and of every /64 inside it
// (interface identifier zero, RFC 4291 section 2.6.1), and the reserved
// subnet anycast addresses of RFC 2526 (interface identifiers
// fdff:ffff:ffff:ff80 to fdff:ffff:ffff:ffff).
//
// A Mapper is immutable: it is safe for concurrent use, and equal
// configurations give equal mappings on every architecture. Its methods do
// not allocate.
type Mapper struct {
	prefix     netip.Prefix
	layout     Layout
	bits       uint8  // log2 of the number of addresses
	shift      uint8  // 64 - bits, for Bucket
	bucketMask uint64 // 2^bits - 1
	hostBits   uint8  // 128 - prefix length

	// The masked prefix and its mask as two big-endian halves.
	pfxHi, pfxLo   uint64
	maskHi, maskLo uint64

	// Contiguous: the first address of the run.
	firstHi, firstLo uint64

	// scattered is layout == LayoutScattered, for AddrWords' inlining budget.
	scattered bool

	// Scattered: the permutation of the host part.
	perm permutation
}

// NewMapper checks cfg and returns its Mapper. The error, wrapping
// [ErrMapperConfig], says which field is wrong and what is allowed.
func NewMapper(cfg MapperConfig) (*Mapper, error) {
	if !cfg.Prefix.IsValid() {
		return nil, fmt.Errorf("%w: prefix is not set or not valid", ErrMapperConfig)
	}
	pfx := cfg.Prefix.Masked()
	if !pfx.Addr().Is6() {
		return nil, fmt.Errorf("%w: prefix %s is IPv4: the addresses must come from an IPv6 prefix", ErrMapperConfig, pfx)
	}
	if pfx.Addr().Is4In6() || pfx.Overlaps(v4MappedPrefix) {
		return nil, fmt.Errorf("%w: prefix %s overlaps the v4-mapped range ::ffff:0:0/96: use a routed IPv6 prefix", ErrMapperConfig, pfx)
	}
	if pfx.Overlaps(multicastPrefix) {
		return nil, fmt.Errorf("%w: prefix %s overlaps the multicast range ff00::/8", ErrMapperConfig, pfx)
	}
	hostBits := 128 - pfx.Bits()
	maxBits := min(hostBits-1, MaxBits)
	if maxBits < 1 {
		return nil, fmt.Errorf("%w: prefix %s has %d host bits: a mapper needs a prefix of /126 or shorter", ErrMapperConfig, pfx, hostBits)
	}
	b, what := cfg.Bits, "bits"
	if b == 0 {
		b, what = DefaultBits, "the default bits"
	}
	if b < 1 || b > maxBits {
		why := "MaxBits"
		if maxBits < MaxBits {
			why = fmt.Sprintf("one less than its %d host bits, so that the addresses can skip its Subnet-Router anycast address", hostBits)
		}
		return nil, fmt.Errorf("%w: %s %d out of range: prefix %s allows 1..%d (%s)",
			ErrMapperConfig, what, b, pfx, maxBits, why)
	}

	a16 := pfx.Addr().As16()
	m := &Mapper{
		prefix:     pfx,
		layout:     cfg.Layout,
		bits:       uint8(b),
		shift:      uint8(64 - b),
		bucketMask: 1<<b - 1,
		hostBits:   uint8(hostBits),
		pfxHi:      binary.BigEndian.Uint64(a16[:8]),
		pfxLo:      binary.BigEndian.Uint64(a16[8:]),
	}
	m.maskHi, m.maskLo = prefixMask(pfx.Bits())

	switch cfg.Layout {
	case LayoutContiguous:
		if err := m.initContiguous(cfg.First); err != nil {
			return nil, err
		}
	case LayoutScattered:
		m.scattered = true
		if cfg.First.IsValid() {
			return nil, fmt.Errorf("%w: First (%s) applies only to the contiguous layout, not the scattered one", ErrMapperConfig, cfg.First)
		}
		if err := m.initScattered(cfg.PermKey); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: unknown layout %d: use LayoutContiguous or LayoutScattered", ErrMapperConfig, uint8(cfg.Layout))
	}
	return m, nil
}

var (
	v4MappedPrefix  = netip.MustParsePrefix("::ffff:0:0/96")
	multicastPrefix = netip.MustParsePrefix("ff00::/8")
)

// The reserved subnet anycast interface identifiers of RFC 2526 section 2
// for the EUI-64 format that RFC 4291 requires of unicast addresses.
const (
	rfc2526First = 0xfdffffffffffff80
	rfc2526Last  = 0xfdffffffffffffff
)

func (m *Mapper) initContiguous(first netip.Addr) error {
	n := uint64(1) << m.bits
	if !first.IsValid() {
		// Host part 2^Bits: the aligned block right above the first one.
		m.firstHi, m.firstLo = m.pfxHi, m.pfxLo|n
		if m.rangeReserved() {
			return fmt.Errorf("%w: the default range %s-%s holds reserved anycast addresses (RFC 2526): set First to a range that avoids them",
				ErrMapperConfig, m.addr(m.firstHi, m.firstLo), m.addr(m.lastOfRange()))
		}
		return nil
	}
	if !first.Is6() || first.Zone() != "" || !m.prefix.Contains(first) {
		return fmt.Errorf("%w: First %s is not an address inside prefix %s", ErrMapperConfig, first, m.prefix)
	}
	f16 := first.As16()
	m.firstHi, m.firstLo = binary.BigEndian.Uint64(f16[:8]), binary.BigEndian.Uint64(f16[8:])
	lastHi, lastLo := m.lastOfRange()
	if lastHi&m.maskHi != m.pfxHi || lastLo&m.maskLo != m.pfxLo || lastHi < m.firstHi {
		return fmt.Errorf("%w: the %d addresses from First %s run past the end of prefix %s: First may be at most %s",
			ErrMapperConfig, n, first, m.prefix, m.addr(m.lastStart()))
	}
	if m.rangeReserved() {
		return fmt.Errorf("%w: the range %s-%s holds a reserved anycast address (the Subnet-Router anycast address of a subnet, "+
			"RFC 4291 section 2.6.1, or one of RFC 2526): choose another First, or leave it unset for the default",
			ErrMapperConfig, first, m.addr(lastHi, lastLo))
	}
	return nil
}

// lastOfRange returns the last address of the contiguous range; it wraps
// around if the range does not fit, which initContiguous checks.
func (m *Mapper) lastOfRange() (hi, lo uint64) {
	lo, carry := bits.Add64(m.firstLo, uint64(1)<<m.bits-1, 0)
	return m.firstHi + carry, lo
}

// lastStart returns the highest First that fits the prefix.
func (m *Mapper) lastStart() (hi, lo uint64) {
	lo, borrow := bits.Sub64(m.pfxLo|^m.maskLo, uint64(1)<<m.bits-1, 0)
	return (m.pfxHi | ^m.maskHi) - borrow, lo
}

// rangeReserved reports whether the contiguous range holds a reserved
// address. The range is shorter than 2^33, so its interface identifiers
// (low 64 bits) wrap around at most once, and a wrap passes through the
// identifier zero.
func (m *Mapper) rangeReserved() bool {
	if m.firstHi == m.pfxHi && m.firstLo == m.pfxLo {
		return true // the prefix's own Subnet-Router anycast address
	}
	end, carry := bits.Add64(m.firstLo, uint64(1)<<m.bits-1, 0)
	if carry != 0 || m.firstLo == 0 {
		return true
	}
	return m.firstLo <= rfc2526Last && end >= rfc2526First
}

func (m *Mapper) initScattered(key [16]byte) error {
	w := uint(m.hostBits)
	m.perm = newPermutation(key, w)
	if w >= 64 {
		// The reserved identifiers of each /64 lie far above the starting
		// points 1..2^Bits (see startOf), and are few.
		return nil
	}
	// A prefix longer than /64 lies in one /64. Its host values are the
	// interface identifiers pfxLo+0 .. pfxLo+2^w-1, and both that run and
	// the RFC 2526 block are aligned powers of two: they are disjoint, or
	// one holds the other. If the prefix holds the block, the block is its
	// top 128 values, which lie above the starting points 1..2^Bits
	// whenever the prefix has 2^Bits usable values.
	size := uint64(1) << w
	usable := size - 1 // all but the prefix's Subnet-Router anycast address
	switch {
	case m.pfxLo <= rfc2526First && rfc2526Last <= m.pfxLo+size-1:
		usable -= rfc2526Last - rfc2526First + 1
	case rfc2526First <= m.pfxLo && m.pfxLo+size-1 <= rfc2526Last:
		usable = 0
	}
	if usable < uint64(1)<<m.bits {
		return fmt.Errorf("%w: prefix %s has only %d addresses that are not reserved anycast addresses (RFC 2526), fewer than the 2^%d the scattered layout needs",
			ErrMapperConfig, m.prefix, usable, m.bits)
	}
	return nil
}

// Prefix returns the mapper's prefix, masked.
func (m *Mapper) Prefix() netip.Prefix { return m.prefix }

// Bits returns log2 of the number of addresses.
func (m *Mapper) Bits() int { return int(m.bits) }

// Len returns the number of addresses (and buckets), 2^Bits.
func (m *Mapper) Len() int { return 1 << m.bits }

// Layout returns the mapper's layout.
func (m *Mapper) Layout() Layout { return m.layout }

// Bucket returns the bucket of hash h, in [0, Len()): the top Bits bits of
// h. Keyed hashes have their best bits everywhere, and the top bits keep
// the bucket stable if Bits grows: a flow's new bucket extends its old one.
func (m *Mapper) Bucket(h uint64) uint32 {
	// The shift is 32 to 63: masking it tells the compiler so, which saves
	// the code Go needs for shifts of 64 or more on the per-packet path.
	return uint32(h >> (m.shift & 63))
}

// Addr16 returns the address of bucket, as 16 bytes in network order.
// Bits of bucket above Bits are ignored. It does not allocate; for the
// contiguous layout it is an addition, for the scattered layout eight
// SipHash-2-4 rounds. On a per-packet path, [Mapper.AddrWords] is faster.
func (m *Mapper) Addr16(bucket uint32) (a [16]byte) {
	hi, lo := m.AddrWords(bucket)
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
	return a
}

// AddrWords returns the address of bucket as two big-endian halves: hi
// holds bytes 0 to 7 of [Mapper.Addr16]'s address, lo bytes 8 to 15. It
// does not allocate.
//
// It is for a sender's per-packet path, where Addr16 costs a call and a
// stall: it is not inlined, its [16]byte result comes back through memory,
// and the caller's 16-byte load of it spans the two stores that just
// wrote it, so it cannot be forwarded from the store buffer. AddrWords
// inlines for the contiguous layout and returns registers, which the
// caller stores where the address goes (a socket address, a control
// message): parse + hash + map took 4 ns less with it.
func (m *Mapper) AddrWords(bucket uint32) (hi, lo uint64) {
	// A contiguous range never crosses a /64 boundary (it would pass the
	// reserved identifier zero), so adding to the low half never carries.
	// The shape keeps the function within the inlining budget.
	hi, lo = m.firstHi, m.firstLo+uint64(bucket)&m.bucketMask
	if m.scattered {
		hi, lo = m.scatter(bucket)
	}
	return
}

// scatter returns the scattered layout's address of bucket.
//
// It walks the permutation's cycle ("cycle walking") from the starting
// point bucket+1 until it leaves the reserved values, which makes it a
// permutation of the values that are not reserved. The starting points
// 1..2^Bits are never reserved, so distinct buckets get distinct
// addresses. unscatter walks back.
func (m *Mapper) scatter(bucket uint32) (hi, lo uint64) {
	hHi, hLo := m.perm.forward(0, uint64(bucket)&m.bucketMask+1)
	for m.reserved(hHi, hLo) {
		hHi, hLo = m.perm.forward(hHi, hLo)
	}
	return m.pfxHi | hHi, m.pfxLo | hLo
}

// Addr returns the address of hash h: Addr16(Bucket(h)) as a netip.Addr.
// It does not allocate.
func (m *Mapper) Addr(h uint64) netip.Addr {
	return netip.AddrFrom16(m.Addr16(m.Bucket(h)))
}

// BucketOf returns the bucket whose address is a. ok is false if a is not
// one of the mapper's Len() addresses, so a receiver can drop datagrams
// sent to other addresses of the prefix. It does not allocate.
func (m *Mapper) BucketOf(a [16]byte) (bucket uint32, ok bool) {
	hi := binary.BigEndian.Uint64(a[:8])
	lo := binary.BigEndian.Uint64(a[8:])
	n := uint64(1) << m.bits
	if m.layout == LayoutContiguous {
		dLo, borrow := bits.Sub64(lo, m.firstLo, 0)
		dHi, _ := bits.Sub64(hi, m.firstHi, borrow)
		if dHi != 0 || dLo >= n {
			return 0, false
		}
		return uint32(dLo), true
	}
	return m.unscatter(hi, lo)
}

// unscatter returns the bucket of (hi, lo) in the scattered layout.
func (m *Mapper) unscatter(hi, lo uint64) (bucket uint32, ok bool) {
	if hi&m.maskHi != m.pfxHi || lo&m.maskLo != m.pfxLo {
		return 0, false
	}
	hHi, hLo := hi&^m.maskHi, lo&^m.maskLo
	if m.reserved(hHi, hLo) {
		return 0, false
	}
	// Walk back along the permutation's cycle to the previous value that
	// is not reserved: the start that Addr16 walked forward from.
	hHi, hLo = m.perm.inverse(hHi, hLo)
	for m.reserved(hHi, hLo) {
		hHi, hLo = m.perm.inverse(hHi, hLo)
	}
	if hHi != 0 || hLo == 0 || hLo > uint64(1)<<m.bits {
		return 0, false // not a starting point: not one of our addresses
	}
	return uint32(hLo - 1), true
}

// reserved reports whether the host part (hi, lo) of the prefix names a
// reserved address: the prefix's Subnet-Router anycast address (host part
// zero), or an interface identifier that is zero (the Subnet-Router
// anycast address of a /64 inside the prefix) or in the RFC 2526 block.
func (m *Mapper) reserved(hi, lo uint64) bool {
	iid := m.pfxLo | lo
	return hi|lo == 0 || iid == 0 || (iid >= rfc2526First && iid <= rfc2526Last)
}

func (m *Mapper) addr(hi, lo uint64) netip.Addr {
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
	return netip.AddrFrom16(a)
}

// prefixMask returns the mask of a prefix length as two big-endian halves.
func prefixMask(length int) (hi, lo uint64) {
	all := ^uint64(0)
	if length <= 64 {
		return all << (64 - length), 0
	}
	return all, all << (128 - length)
}
