package conn

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
)

// DefaultBits is the size of the spread range when Config.Bits or Peer.Bits
// is zero: 2^10 addresses, as many as fq_codel has queues.
const DefaultBits = 10

// maxBits bounds the range: Stats keeps a counter per address.
const maxBits = 20

// Config describes a [FlowSpreadConn]. Both ends of a tunnel must agree on
// Layout, PermKey, each other's Range, and (for flow-symmetric mapping)
// the hash key, so that both map a flow to the same address and port pair.
//
// The conn never authenticates a datagram's source: it only sorts
// datagrams by outer address and port, which anyone who can send packets
// with that source can forge. Spreading widens who passes as a peer from
// one address and port to the addresses and ports of its range. For an off-path
// attacker, forging a source in the range is no easier than forging the
// canonical address; but a host on the path inside the peer's prefix (its
// /64, say) that owns or can send from a range address now passes as the
// peer. The VPN must therefore authenticate every datagram itself, as
// WireGuard does; a VPN that trusts the source address is not safe with
// this conn, nor with a plain UDP socket.
type Config struct {
	// Range is this host's widened endpoint: the outer source addresses
	// and ports its flows go out from, and that peers send them to (see
	// [Range]). The zero Range spreads no sources: only destinations are
	// spread, for peers that have a Range. A Prefix must reach this
	// host: add an AnyIP local route (`ip -6 route add local PREFIX dev
	// lo`), use the [Raw] receiver, or, for a prefix that is on-link
	// rather than routed, add neighbour proxies too (see package
	// [github.com/flowspread/flowspread/conn/host]). Ports need nothing:
	// Listen opens a socket on each.
	Range Range
	// Layout says where the bucket bits go inside the prefix; see
	// [flowaddr.Layout]. It applies to the peers' prefixes too.
	Layout flowaddr.Layout
	// PermKey keys the permutation from bucket to address; both ends must
	// use the same one.
	PermKey [16]byte
	// Port is the canonical UDP port to bind on [::]. Zero picks a free
	// port (not with Range.Ports, which must not hold it).
	Port uint16

	// Peers are the tunnel's other ends. Datagrams from anywhere else are
	// dropped and counted, unless AcceptUnknown is set. Each peer's Addr
	// must be distinct. A peer's datagrams come either from its canonical
	// Addr (unspread, to any of our addresses) or from its Range, to our
	// Range: a peer that spreads must know our Range. Any datagram from
	// the peer's range is read as the peer's: the conn does not
	// authenticate it.
	Peers []Peer
	// AcceptUnknown delivers datagrams from a source that is no peer's,
	// instead of dropping them: a read reports such a datagram's plain
	// outer source address (IPv4 unmapped) as its Peer. It is meant for a
	// VPN that authenticates every datagram itself, as WireGuard does, so
	// a peer that moves to an address outside Peers (a new network, a NAT
	// rebinding, a new port) is still heard and the VPN can follow it.
	// Replies to such an address go out unspread, on the plain path: from
	// the socket's default source to that address. Datagrams from a
	// peer's canonical address or spread range are mapped to the peer as
	// always, and those from a peer's spread range to our prefix outside
	// our range are still dropped. With AcceptUnknown, Peers may be empty.
	// The default, false, drops strangers' datagrams before the VPN sees
	// them; it is no authentication (see above), only less to decrypt.
	AcceptUnknown bool

	// Policy gives the flow hash. Nil means a static SipHash-2-4 keyed
	// with Key.
	Policy hash.Policy
	// Key keys the default SipHash-2-4 policy; ignored when Policy is set.
	// The zero Key means a random key: flows then map differently at each
	// end, so replies do not reuse the request's address pair.
	Key hash.Key
	// Symmetric hashes the flow-symmetric canonical key
	// ([flowaddr.Key.Canonical]): with the same hash at both ends, a
	// request and its reply use the same outer address pair, so a
	// stateful firewall on the path matches the reply to the request.
	Symmetric bool

	// Receive selects the receive backend. Nil means [AnyIP].
	Receive Receive
	// Transparent sets IPV6_TRANSPARENT instead of IPV6_FREEBIND on the
	// socket. It needs CAP_NET_ADMIN or CAP_NET_RAW; FREEBIND needs no
	// capability and is enough with an AnyIP local route.
	Transparent bool
	// FlowLabel sets the IPv6 flow label of each outer packet (RFC 6438)
	// from its outer address and port pair: every packet of a flow
	// carries one nonzero label, shared by every flow of that pair, so the
	// label tells an observer nothing the addresses and ports do not, and
	// a hop that hashes {src, dst, flow label} in place of the ports (as
	// Linux does for a nonzero label) separates exactly the flows that
	// hops hashing the 5-tuple separate.
	FlowLabel bool
	// Probe lets the conn send, for a flow whose spread pair is not yet
	// known open, a rate-limited copy of one of its datagrams on the
	// spread pair, besides the datagram itself on the canonical pair. The
	// copy opens our own firewall for the peer's answer on that pair, and
	// the peer, seeing the flow arrive there, moves it too, so two ends
	// behind firewalls meet. Set it only if the VPN drops duplicated
	// datagrams (WireGuard and flowtun drop replays; conn/wireguard sets
	// it).
	Probe bool
	// PathTimeout is how long a flow's spread pair to a peer that is not
	// Open stays known open after the peer's last datagram for it arrived
	// on it (see [FlowSpreadConn.Observe]), to within 0.14 s. A flow that
	// is idle longer goes back to the canonical pair (and probes again),
	// so it never goes on a pair a firewall may have forgotten. Zero means
	// [DefaultPathTimeout], 20 s, below the 30 s UDP timeout of Linux
	// conntrack and of most home routers; set it below the UDP timeout
	// of the firewalls on your path if theirs is shorter.
	PathTimeout time.Duration
	// DisableGSO turns off UDP segmentation offload on send; DisableGRO
	// turns off UDP receive offload. Both are used only when the kernel
	// supports them.
	DisableGSO, DisableGRO bool
	// DisablePortSteering keeps Listen from attaching a BPF sk_lookup
	// program to the network namespace that hands the datagrams to every
	// port of Range.Ports to the canonical socket (see
	// Stats.PortSteering). Without the privileges for it, Listen goes on
	// without; either way every datagram is read.
	DisablePortSteering bool
}

// Peer is one other end of the tunnel.
type Peer struct {
	// Addr is the peer's canonical address: where unspread datagrams go,
	// and the address that reads report for every datagram from the peer,
	// whichever outer source address it came from.
	Addr netip.AddrPort
	// Range is the peer's widened endpoint, its Config.Range: the outer
	// destination addresses and ports of its flows. The zero Range means
	// the peer is not spread: every datagram goes to Addr. With a Range,
	// a datagram from any address and port of the peer's range (its
	// canonical address with a port of its range, if it has no Prefix;
	// an address of its range with its canonical port, if it has no
	// Ports) is read as from Addr: whoever can send from one of them
	// passes as the peer, so the VPN must authenticate every datagram.
	Range Range
	// Open declares every outer address pair between our range and the
	// peer's reachable from the start: no stateful firewall on the path
	// drops a datagram on a pair the peer has not used yet (a lab, or a
	// server whose prefix is routed to it with no firewall in front).
	// A flow to an Open peer goes on its spread pair at once.
	//
	// By default (false) a flow goes on its spread pair only once the
	// peer's own traffic for that flow has arrived on that pair, as the
	// VPN reports with [FlowSpreadConn.Observe]; until then, and again
	// when the pair has been idle too long for a firewall to still hold
	// it open, the flow goes on the canonical pair, which the VPN's
	// keepalives hold open. A home router's firewall (RFC 6092) drops an
	// inbound datagram on a pair with no state, so sending on an unused
	// pair would black-hole the flow.
	Open bool
}

// Receive selects a receive backend: [AnyIP] or [Raw].
type Receive interface {
	receiveBackend()
}

// AnyIP receives on the UDP socket itself: an AnyIP local route for the
// prefix (`ip -6 route add local PREFIX dev lo`) makes every address of the
// prefix local, and IPV6_RECVPKTINFO tells which one a datagram was sent to.
type AnyIP struct{}

// Raw receives with an AF_PACKET socket on Interface that a BPF filter
// restricts to UDP datagrams to the prefix and port, for hosts where the
// prefix is routed to the interface but not made local. It needs
// CAP_NET_RAW. Datagrams to the host's own addresses (a peer's unspread
// traffic to our canonical address) are still read from the UDP socket.
//
// Reads wait out the interface going down, and going away: when an
// interface of the same name appears again (a re-created tap, veth or USB
// NIC), the listener binds to it within a tenth of a second. Stats counts
// both (RecvLinkDown, RecvRebound).
//
// Raw delivers what the kernel would deliver to the socket with [AnyIP]:
// it drops frames addressed to other hosts' link addresses (a promiscuous
// NIC, a bridge port) or belonging to a VLAN on Interface (open Raw on
// the VLAN's interface instead), and counts them in Stats.RecvBadSource.
// It reassembles IPv6 fragments as RFC 8200 section 4.5 says, within
// fixed bounds: up to 64 datagrams at once, each of up to 64 fragments
// and 65535 bytes, so at most 4 MiB of buffers, allocated when first
// needed; a datagram not whole within 5 seconds, or pushed out by newer
// ones when all 64 are in use, is dropped, as is one with overlapping
// fragments (RFC 5722). Stats.RecvReassembled and RecvFragmentsDropped
// count them. Reassembly costs a copy:
// [github.com/flowspread/flowspread/conn/host.Diagnose] warns when the
// interface's MTU makes fragments likely.
type Raw struct {
	Interface string
}

func (AnyIP) receiveBackend() {}
func (Raw) receiveBackend()   {}

// Validate checks cfg as [Listen] does, without opening anything, and
// returns it with the defaults filled in, so a program can report a bad
// setting when it reads it, before it hands the Config on (a wireguard-go
// Bind opens the conn only when the device comes up). Listen can still
// fail for what only opening shows: a port in use, a missing capability.
func (cfg Config) Validate() (Config, error) { return cfg.validate() }

// validate checks cfg and returns it with defaults filled in. Each error
// says what is wrong and what is expected.
func (cfg Config) validate() (Config, error) {
	r, err := cfg.Range.validate("Range", cfg.Port, false)
	if err != nil {
		return cfg, fmt.Errorf("conn: %w", err)
	}
	cfg.Range = r

	if len(cfg.Peers) == 0 && !cfg.AcceptUnknown {
		return cfg, fmt.Errorf("conn: no Peers: list the tunnel's other ends, datagrams from anyone else are dropped (or set AcceptUnknown if your VPN authenticates every datagram)")
	}
	peers, err := validatePeers(cfg.Peers, cfg.Range.Prefix, listedPeer)
	if err != nil {
		return cfg, fmt.Errorf("conn: %w", err)
	}
	cfg.Peers = peers

	switch {
	case cfg.PathTimeout < 0:
		return cfg, fmt.Errorf("conn: PathTimeout is %v: it must be positive, or zero for the default %v", cfg.PathTimeout, DefaultPathTimeout)
	case cfg.PathTimeout == 0:
		cfg.PathTimeout = DefaultPathTimeout
	}

	switch r := cfg.Receive.(type) {
	case nil:
		cfg.Receive = AnyIP{}
	case AnyIP:
	case Raw:
		if r.Interface == "" {
			return cfg, fmt.Errorf("conn: Raw receive needs an Interface: the name of the link the prefix is routed to")
		}
		if !cfg.Range.Prefix.IsValid() {
			return cfg, fmt.Errorf("conn: Raw receive on %s needs a Range.Prefix: the listener captures datagrams to the prefix", r.Interface)
		}
		if cfg.Range.Ports.Len() > 0 {
			return cfg, fmt.Errorf("conn: Raw receive on %s takes no Range.Ports: it captures datagrams to one port; use the default AnyIP receive with the prefix's local route, which reads every port's socket", r.Interface)
		}
	default:
		return cfg, fmt.Errorf("conn: unknown Receive %T: use conn.AnyIP{} or conn.Raw{Interface: ...}", r)
	}
	return cfg, nil
}

// canonicalPeerAddr returns the form of a peer's Addr that tells two
// peers apart: unmapped, without a zone.
func canonicalPeerAddr(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// peerNamer names peer i of a list being validated, or its field (a
// Peer field name, or "" for the peer itself), in an error message.
type peerNamer func(peers []Peer, i int, field string) string

// listedPeer names peers by their place in Config.Peers: "Peers[2].Range".
func listedPeer(_ []Peer, i int, field string) string {
	if field == "" {
		return fmt.Sprintf("Peers[%d]", i)
	}
	return fmt.Sprintf("Peers[%d].%s", i, field)
}

// validatePeers checks peers as Config.Peers, against each other and our
// prefix ours, and returns them with defaults filled in. Errors name
// peers with name and do not start with "conn: ".
func validatePeers(peers []Peer, ours netip.Prefix, name peerNamer) ([]Peer, error) {
	seen := make(map[netip.AddrPort]int, len(peers))
	hosts := make(map[netip.Addr]int, len(peers)) // the first peer at each address
	valid := make([]Peer, len(peers))
	overlapJ, overlapI := firstOverlap(peers)
	for i, p := range peers {
		if !p.Addr.IsValid() || p.Addr.Port() == 0 {
			return nil, fmt.Errorf("%s %v is not an address with a port", name(peers, i, "Addr"), p.Addr)
		}
		if p.Addr.Addr().IsUnspecified() {
			return nil, fmt.Errorf("%s %v is the unspecified address: give the peer's own address", name(peers, i, "Addr"), p.Addr)
		}
		canon := canonicalPeerAddr(p.Addr)
		if j, dup := seen[canon]; dup {
			return nil, fmt.Errorf("%s and %s have the same Addr %v", name(peers, j, ""), name(peers, i, ""), p.Addr)
		}
		seen[canon] = i
		r, err := p.Range.validate(name(peers, i, "Range"), p.Addr.Port(), true)
		if err != nil {
			return nil, err
		}
		p.Range = r
		if err := checkPeerRange(p, name(peers, i, "")); err != nil {
			return nil, err
		}
		host := p.Addr.Addr().Unmap().WithZone("")
		j, shared := hosts[host]
		if !shared {
			hosts[host] = i
		} else if r.Ports.Len() > 0 || valid[j].Range.Ports.Len() > 0 {
			return nil, fmt.Errorf("%s and %s share the address %v and one of them spreads over ports: a datagram's source port must name one peer; give each its own address", name(peers, j, ""), name(peers, i, ""), host)
		}
		if p.Range.Prefix.IsValid() {
			if ours.IsValid() && ours.Overlaps(p.Range.Prefix) {
				return nil, fmt.Errorf("%s %v overlaps our Range.Prefix %v: each end needs its own prefix", name(peers, i, "Range.Prefix"), p.Range.Prefix, ours)
			}
			if i == overlapI {
				return nil, fmt.Errorf("%s %v overlaps %s %v: a datagram's source must name one peer", name(peers, i, "Range.Prefix"), p.Range.Prefix, name(peers, overlapJ, "Range.Prefix"), valid[overlapJ].Range.Prefix)
			}
		}
		valid[i] = p
	}
	return valid, nil
}

// checkPeerRange checks what a peer's Range asks of the rest of the
// peer: its Range is valid by itself.
func checkPeerRange(p Peer, what string) error {
	a := p.Addr.Addr()
	switch {
	case p.Range.Prefix.IsValid() && (!a.Is6() || a.Is4In6()):
		return fmt.Errorf("%s has an IPv6 Range.Prefix %v but an IPv4 Addr %v: spreading over addresses needs an IPv6 path to the peer (spread over Range.Ports on IPv4)", what, p.Range.Prefix, p.Addr)
	case p.Range.Ports.Translated && p.Open:
		return fmt.Errorf("%s is Open but its Range.Ports are Translated: a NAT's ports are known only once the peer's traffic arrives on them, so nothing can be sent on them before", what)
	}
	return nil
}

// firstOverlap returns the lowest i whose Prefix overlaps that of a peer
// j < i, and the lowest such j, or -1, -1 if no two overlap: the pair a
// check of each peer against the ones before it finds first. It looks
// only at valid, masked IPv6 prefixes (validate rejects the others), in
// O(n log n), where comparing every pair took most of a second for
// 10,000 peers.
//
// Two prefixes overlap iff one contains the other. Sorted by address,
// then length, the prefixes a prefix contains follow it, so a stack of
// the prefixes that contain the current one is its chain of containing
// prefixes: each prefix learns the lowest index among those that contain
// it on the way in, and among those it contains on the way out.
func firstOverlap(peers []Peer) (j, i int) {
	var order []int32
	for k, p := range peers {
		if a := p.Range.Prefix.Addr(); p.Range.Prefix.IsValid() && a.Is6() && !a.Is4In6() && p.Range.Prefix == p.Range.Prefix.Masked() {
			order = append(order, int32(k))
		}
	}
	slices.SortFunc(order, func(x, y int32) int {
		px, py := peers[x].Range.Prefix, peers[y].Range.Prefix
		if c := px.Addr().Compare(py.Addr()); c != 0 {
			return c
		}
		return px.Bits() - py.Bits()
	})
	// above[k], inside[k]: the lowest index of a peer whose prefix
	// contains peer k's, or that k's contains (of two equal prefixes, the
	// one sorted first contains the other).
	above := make([]int32, len(peers))
	inside := make([]int32, len(peers))
	for k := range peers {
		above[k], inside[k] = math.MaxInt32, math.MaxInt32
	}
	var stack []int32 // each entry's prefix contains the next one's
	pop := func() {
		k := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			inside[top] = min(inside[top], k, inside[k])
		}
	}
	for _, k := range order {
		for len(stack) > 0 && !peers[stack[len(stack)-1]].Range.Prefix.Overlaps(peers[k].Range.Prefix) {
			pop()
		}
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			above[k] = min(top, above[top])
		}
		stack = append(stack, k)
	}
	for len(stack) > 0 {
		pop()
	}
	for k := range peers {
		if l := int(min(above[k], inside[k])); l < k {
			return l, k
		}
	}
	return -1, -1
}

// rangeBits checks the range size of a prefix and fills in the default.
func rangeBits(field string, bits int, prefix netip.Prefix) (int, error) {
	room := 128 - prefix.Bits()
	if bits == 0 {
		bits = min(DefaultBits, room)
	}
	switch {
	case bits < 0:
		return 0, fmt.Errorf("%s is %d: the range has 2^%s addresses, so it must be at least 1", field, bits, field)
	case room == 0:
		return 0, fmt.Errorf("prefix %v is a single address: spreading needs a shorter prefix such as a /64", prefix)
	case bits > room:
		return 0, fmt.Errorf("%s is %d but prefix %v has only %d host bits", field, bits, prefix, room)
	case bits > maxBits:
		return 0, fmt.Errorf("%s is %d: at most %d (1M addresses, 8 MB of per-address counters); fq_codel has 1024 queues, so 10 is plenty", field, bits, maxBits)
	}
	return bits, nil
}
