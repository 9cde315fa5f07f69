// Package flowaddr finds the flow an inner packet of a VPN belongs to, and
// maps that flow to an outer IPv6 address of its own, so that every
// flow-queueing AQM (fq_codel, cake) on the tunnel's path sees, and
// isolates, the tunnel's flows.
//
// A tunnel end classifies each plaintext packet before encrypting it:
// [Parse] gives its [Key], a keyed hash (package
// [github.com/flowspread/flowspread/hash]) of [Key.Bytes] gives a 64-bit
// value, and a [Mapper] turns that value into an address in the local
// prefix (the outer source) and, with the peer's Mapper, in the peer's
// prefix (the outer destination).
//
// # Flow key
//
// A [Key] is the innermost transport 5-tuple of a packet: addresses,
// ports and protocol, plus [Flags]. It is a packed, comparable,
// pointer-free value: cheap to copy, a good map key, and its binary form
// ([Key.Bytes], [KeyLen] bytes) is the same on every architecture, so both
// tunnel ends hash it alike. IPv4 addresses are stored v4-mapped.
//
// # Parser
//
// [Parse] reads a raw IPv4 or IPv6 packet, as a TUN device hands it to a
// VPN, and returns the key of its innermost flow ([ParseInto] writes it
// into a caller's Key, which is faster on a per-packet path); [ParseEthernet] and
// [ParseLinuxSLL] read Ethernet frames and Linux cooked captures. The
// parser walks IPv6 extension headers, keys fragments by addresses and
// protocol only (so every fragment of a datagram gets the same key, see
// [FlagFragment]), and descends through IPIP, 6in4, 4in6, IPv6-in-IPv6,
// GRE (keyed, and transparent Ethernet bridging) and VXLAN down to the
// innermost packet. An ICMP or ICMPv6 error follows the flow it quotes:
// its key is that flow's reply key, so a Packet Too Big travels with the
// flow it is about. The parser checks every length against the buffer and
// against the headers' own length fields, bounds nesting, returns a
// preallocated sentinel error ([ErrTruncated], [ErrVersion], ...) for
// garbage, and never allocates or panics.
//
// # Canonical form
//
// [Key.Canonical] gives both directions of a flow one key. Two tunnel
// ends that hash canonical keys with one secret put a request and its
// reply on the same pair of outer addresses, so a stateful firewall on
// the path matches the reply to the request's connection entry, and a
// flow takes one address pair, not one per direction.
// [Key.Canonicalize] does the same in place.
//
// # Per-packet path
//
// A sender classifies every packet, so the package keeps that path short:
// [ParseInto], [Key.Canonicalize] and [Key.Bytes] work on one Key in
// place, [Mapper.AddrWords] returns the address in registers for the
// caller to store where it goes, and none of them allocates. [Parse],
// [Key.Canonical] and [Mapper.Addr16] return their results by value,
// which is convenient elsewhere but costs a copy per call: on amd64,
// reading a Key or an address with 16-byte loads right after it was
// written by narrower or overlapping stores stalls the CPU, as the loads
// cannot be forwarded from the stores still in flight (see ParseInto and
// AddrWords for the numbers).
//
// # Mapper
//
// A [Mapper] owns 2^Bits addresses of an IPv6 prefix ([MapperConfig]; the
// default is 2^10, as many as fq_codel's default queues). The top Bits bits
// of a flow's hash pick a bucket ([Mapper.Bucket]) and the layout gives the
// bucket's address ([Mapper.Addr16], [Mapper.Addr]):
//
//   - [LayoutContiguous] (the default): bucket b gets First + b, by default
//     the aligned block at host part 2^Bits (2001:db8::400 to
//     2001:db8::7ff for 2001:db8::/64 and 10 bits). It takes a few
//     nanoseconds and is easy to name in a route or a firewall rule.
//   - [LayoutScattered]: bucket b gets a keyed permutation of the whole
//     host part (a Feistel network with SipHash-2-4 rounds, keyed by
//     [MapperConfig.PermKey]), so the addresses spread over the prefix and
//     cannot be told from it without the key.
//
// Neither layout yields the Subnet-Router anycast address of the prefix or
// of a /64 in it (RFC 4291 section 2.6.1), or a reserved subnet anycast
// address (RFC 2526). [Mapper.BucketOf] inverts the mapping, so a receiver
// can tell a datagram sent to one of its flow addresses from one sent to
// another address of the prefix. Both tunnel ends must configure the
// peer's Mapper exactly as the peer does (prefix, bits, layout, First or
// PermKey).
//
// Bits bounds what the spreading costs and exposes: an observer on the
// path sees at most 2^Bits addresses per end, a stateful firewall tracks
// at most 2^Bits x 2^Bits outer address pairs for the tunnel, and cake, which in its dual-srchost and
// triple-isolate modes counts every source address as a host, counts the
// tunnel as at most 2^Bits hosts. Rotating the hash key (package
// [github.com/flowspread/flowspread/hash])
// limits what the observer learns over time.
//
// # ECN
//
// The outer header of a tunnelled packet should carry the inner packet's
// ECN field, so that queues on the path can mark instead of drop, and a
// mark set on the path must reach the inner flow. [OuterECN] gives the
// outer ECN field for an inner one (RFC 6040 section 4.1, normal mode);
// [Decapsulate] folds an arriving outer ECN field into the decapsulated
// inner packet in place (RFC 6040 section 4.2), and says when the packet
// must be dropped instead. [PacketECN] reads a packet's ECN field. Reading
// and writing the outer field of a UDP datagram (IP_TOS, IPV6_TCLASS) is
// the socket layer's work.
package flowaddr
