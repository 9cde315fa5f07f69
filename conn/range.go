package conn

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPortBits is the size of a port range whose Bits is zero: 2^8 =
// 256 ports, so 4 flows share a port (and a flow queue) with odds of 1 in
// 43 and 8 with odds of 1 in 10, at a cost of one socket per port (see
// docs/dimensions.md: with 64 ports, 1 in 11 for 4 flows, a collision
// showed in one run of the lab's four).
const DefaultPortBits = 8

// maxPortBits bounds a port range: 2^10 sockets, as many as fq_codel has
// queues.
const maxPortBits = 10

// Range is a widened endpoint: the outer addresses and ports that one
// end's flows are spread over. Each inner flow gets one address of the
// prefix's range and one port of the port range, chosen by its hash;
// either may be left out.
//
//   - Addresses (Prefix, Bits): IPv6 only, and the prefix must reach the
//     host: routed to it (with an AnyIP local route or [Raw]), or on-link
//     with neighbour proxies. Every flow queue on the path (fq_codel,
//     cake, per-flow ECMP) tells them apart, but a host-fair queue
//     (cake's triple-isolate, dual-srchost, dual-dsthost) counts each
//     address as a host.
//   - Ports (Ports): IPv4 or IPv6, no prefix, no privileges, through NAT;
//     flow queues tell them apart as well, and a host-fair queue sees one
//     host. Each port is a socket of its own.
//
// The zero Range spreads nothing: the endpoint is the canonical address
// and port alone.
type Range struct {
	// Prefix is the IPv6 prefix whose addresses become outer addresses,
	// and Bits the size of the range: 2^Bits addresses of Prefix, laid
	// out as Config.Layout says. Zero Bits means [DefaultBits] (or all
	// the prefix's host bits, if fewer).
	Prefix netip.Prefix
	Bits   int
	// Ports is the range of UDP ports that become outer ports.
	Ports PortRange
}

// PortRange is a range of 2^Bits UDP ports from First. The zero
// PortRange is none: the endpoint's one port is its canonical port.
type PortRange struct {
	// First is the first port of the range. It must leave room for the
	// whole range below 65536, and the range must not hold the
	// canonical port. On a Peer with Translated, First is not used.
	First uint16
	// Bits sets the number of ports, 2^Bits, at most 2^10. Zero with a
	// nonzero First means [DefaultPortBits].
	Bits int
	// Translated, on a Peer, says a NAT in front of the peer rewrites
	// its ports: a datagram from any port of the peer's addresses is the
	// peer's, and each flow is answered on the port pair it last arrived
	// on, once it has (see [FlowSpreadConn.Observe]). Bits is then the
	// number of ports the peer spreads over, which sizes what the conn
	// remembers. The peer's canonical Addr must be what the NAT maps the
	// peer's canonical socket to; Linux masquerade and most home NATs
	// keep a port that is free. A Translated peer cannot be Open: its
	// ports are known only once its traffic arrives.
	Translated bool
}

// IsZero reports whether r spreads nothing.
func (r Range) IsZero() bool { return r == Range{} }

// spreadsAddrs reports whether r spreads over addresses.
func (r Range) spreadsAddrs() bool { return r.Prefix.IsValid() }

// Len returns the number of ports in the range, 0 for none.
func (p PortRange) Len() int {
	if p == (PortRange{}) {
		return 0
	}
	return 1 << p.Bits
}

// Port returns the i-th port of the range.
func (p PortRange) Port(i int) uint16 { return p.First + uint16(i) }

// PortOf returns the port of the range that the flow of hash h goes on:
// bits 31 down of h pick it (the top bits pick its address, see
// [flowaddr.Mapper.Bucket]), so both ends pick the same. 0 for an empty
// or translated range.
func (p PortRange) PortOf(h uint64) uint16 {
	if p.Len() == 0 || p.Translated {
		return 0
	}
	return p.First + portIndex(h, uint8(32-p.Bits))
}

// Contains reports whether port lies in the range.
func (p PortRange) Contains(port uint16) bool {
	return p.Len() > 0 && !p.Translated && port >= p.First && int(port-p.First) < p.Len()
}

// String returns the range in the form ParseRange reads.
func (r Range) String() string {
	var parts []string
	if r.Prefix.IsValid() {
		parts = append(parts, "prefix="+r.Prefix.String())
		if r.Bits != 0 {
			parts = append(parts, "bits="+strconv.Itoa(r.Bits))
		}
	}
	switch p := r.Ports; {
	case p.Translated:
		parts = append(parts, "nat-ports="+strconv.Itoa(1<<p.Bits))
	case p.Len() > 0:
		parts = append(parts, fmt.Sprintf("ports=%d-%d", p.First, int(p.First)+p.Len()-1))
	}
	return strings.Join(parts, ",")
}

// MarshalText implements [encoding.TextMarshaler] with the form of String.
func (r Range) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler] with ParseRange, so
// a Range is a flag of its own (flag.TextVar).
func (r *Range) UnmarshalText(text []byte) error {
	v, err := ParseRange(string(text))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseRange reads a Range from comma-separated settings:
//
//	prefix=2001:db8:a::/64   addresses of this IPv6 prefix
//	bits=8                   2^8 of them (default 10)
//	ports=61000-61255        these ports (a power-of-two count)
//	nat-ports=256            a peer's 256 ports, which a NAT translates
//
// such as "prefix=2001:db8:a::/64,bits=8,ports=61000-61255". The empty
// string is the zero Range. It checks the form; [Listen] and
// [FlowSpreadConn.SetPeer] check the rest.
func ParseRange(s string) (Range, error) {
	var r Range
	if strings.TrimSpace(s) == "" {
		return r, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return Range{}, fmt.Errorf("range %q: %q is not key=value (keys: prefix, bits, ports, nat-ports)", s, item)
		}
		if seen[key] {
			return Range{}, fmt.Errorf("range %q: %s given twice", s, key)
		}
		seen[key] = true
		var err error
		switch key {
		case "prefix":
			r.Prefix, err = netip.ParsePrefix(val)
		case "bits":
			r.Bits, err = strconv.Atoi(val)
		case "ports":
			r.Ports, err = parsePorts(val)
		case "nat-ports":
			r.Ports, err = parsePortCount(val)
		default:
			err = errors.New("unknown key (keys: prefix, bits, ports, nat-ports)")
		}
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %s: %w", s, key, err)
		}
	}
	if seen["ports"] && seen["nat-ports"] {
		return Range{}, fmt.Errorf("range %q: give ports or nat-ports, not both", s)
	}
	if seen["bits"] && !seen["prefix"] {
		return Range{}, fmt.Errorf("range %q: bits sizes the address range: give prefix too", s)
	}
	return r, nil
}

// parsePorts reads FIRST-LAST, a power-of-two count of ports.
func parsePorts(s string) (PortRange, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return PortRange{}, fmt.Errorf("%q is not FIRST-LAST, such as 61000-61255", s)
	}
	first, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return PortRange{}, fmt.Errorf("%q is not a port", a)
	}
	last, err := strconv.ParseUint(b, 10, 16)
	if err != nil {
		return PortRange{}, fmt.Errorf("%q is not a port", b)
	}
	n := last - first + 1
	if last <= first || n&(n-1) != 0 {
		return PortRange{}, fmt.Errorf("%s holds %d ports: the count must be a power of two from 2, such as 61000-61255", s, int(last)-int(first)+1)
	}
	return PortRange{First: uint16(first), Bits: log2(n)}, nil
}

// parsePortCount reads a power-of-two count of translated ports.
func parsePortCount(s string) (PortRange, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n < 2 || n&(n-1) != 0 {
		return PortRange{}, fmt.Errorf("%q is not a power-of-two count of ports from 2, such as 64", s)
	}
	return PortRange{Bits: log2(n), Translated: true}, nil
}

func log2(n uint64) int {
	b := 0
	for n > 1 {
		n >>= 1
		b++
	}
	return b
}

// validate checks r as the range of an endpoint whose canonical port is
// canon (0: not known yet), and returns it with defaults filled in. what
// names it in errors ("Range", "Peers[2].Range"); peer says it is a
// peer's, which alone may be Translated.
func (r Range) validate(what string, canon uint16, peer bool) (Range, error) {
	if r.Prefix.IsValid() {
		a := r.Prefix.Addr()
		switch {
		case !a.Is6() || a.Is4In6():
			return r, fmt.Errorf("%s.Prefix %v is not IPv6: only IPv6 has room for a range of addresses (spread over Ports on IPv4)", what, r.Prefix)
		case a.Zone() != "":
			return r, fmt.Errorf("%s.Prefix %v has a zone: the spread prefix must be a global IPv6 prefix", what, r.Prefix)
		case r.Prefix != r.Prefix.Masked():
			return r, fmt.Errorf("%s.Prefix %v has bits set past its length: did you mean %v?", what, r.Prefix, r.Prefix.Masked())
		}
		bits, err := rangeBits(what+".Bits", r.Bits, r.Prefix)
		if err != nil {
			return r, err
		}
		r.Bits = bits
	} else if r.Prefix != (netip.Prefix{}) {
		return r, fmt.Errorf("%s.Prefix %v is not a valid prefix", what, r.Prefix)
	} else if r.Bits != 0 {
		return r, fmt.Errorf("%s.Bits is %d but its Prefix is empty: set the IPv6 prefix to spread over, or leave Bits zero", what, r.Bits)
	}
	p := &r.Ports
	switch {
	case p.Translated && !peer:
		return r, fmt.Errorf("%s.Ports.Translated is set: only a peer's ports can be translated by a NAT in front of it; our own ports are ours", what)
	case p.Bits < 0 || p.Bits > maxPortBits:
		return r, fmt.Errorf("%s.Ports.Bits is %d: it must be from 1 to %d (2 to %d ports, a socket each), or 0 for the default %d", what, p.Bits, maxPortBits, 1<<maxPortBits, DefaultPortBits)
	case p.Translated:
		if p.Bits == 0 {
			p.Bits = DefaultPortBits
		}
		p.First = 0
	case p.First == 0 && p.Bits != 0:
		return r, fmt.Errorf("%s.Ports.Bits is %d but First is 0: give the first port of the range", what, p.Bits)
	case p.First != 0:
		if p.Bits == 0 {
			p.Bits = DefaultPortBits
		}
		if last := int(p.First) + p.Len() - 1; last > 65535 {
			return r, fmt.Errorf("%s.Ports %d-%d runs past port 65535: start it lower", what, p.First, last)
		}
		if canon != 0 && p.Contains(canon) {
			return r, fmt.Errorf("%s.Ports %d-%d holds the canonical port %d: the canonical port is a socket of its own; move the range", what, p.First, int(p.First)+p.Len()-1, canon)
		}
	}
	return r, nil
}
