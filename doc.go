// Package flowspread lets an encrypted UDP VPN show its inner flows to every
// fq_codel or cake queue on the path.
//
// # The problem
//
// Flow-queueing AQMs such as fq_codel and cake give each flow its own queue,
// so a sparse flow (a call, a game, DNS, TCP ACKs) never waits behind a bulk
// download. They find flows by hashing the outer headers. A VPN wraps all of
// its inner flows in one outer UDP 5-tuple, so every hop between the tunnel
// ends sees a single flow: the inner flows share one queue, and the whole
// tunnel gets one flow's share of a congested link however many flows it
// carries.
//
// # The idea
//
// IPv6 hands every site at least a /64. flowspread uses those addresses as
// flow identifiers: a keyed hash of each inner flow's innermost 5-tuple picks
// an outer source address in our prefix and an outer destination address in
// the peer's prefix. Every hop then sees as many outer flows as the tunnel
// carries inner flows, and isolates them without decrypting anything.
//
//	inner packet --flowaddr.Parse--> flowaddr.Key --hash.Policy--> uint64
//	  --flowaddr.Mapper--> outer source and destination addresses
//	  --conn.FlowSpreadConn (sendmmsg, per-message source, GSO)--> wire
//	wire --AnyIP socket or raw listener--> FlowSpreadConn reads
//	  --the peer's one canonical address, outer ECN--> the VPN
//
// # Packages
//
//   - [github.com/flowspread/flowspread/flowaddr]: the flow key, a parser
//     that finds the innermost transport 5-tuple of a raw IPv4 or IPv6 packet
//     through extension headers, fragments and encapsulations without
//     allocating, the symmetric (canonical) form of a key, the Mapper from a
//     hash to an address inside a prefix, and the RFC 6040 ECN rules.
//   - [github.com/flowspread/flowspread/hash]: the keyed hash (SipHash-2-4 by
//     default) and key rotation that never moves a flow in mid-burst.
//   - [github.com/flowspread/flowspread/conn]: FlowSpreadConn, a
//     [net.PacketConn] for a VPN's UDP socket that spreads its flows.
//   - [github.com/flowspread/flowspread/conn/host]: the host around it:
//     Diagnose checks a host for a conn's Config (with the same probe of
//     socket options Listen uses), AddLocalRoute makes the prefix local.
//
// # What an observer learns
//
// Spreading shows how many flows a tunnel carries and when each is busy, not
// what they are: the hash is keyed, so an observer can neither predict nor
// steer the address a flow gets. The mapper restricts a tunnel to 2^bits
// addresses (1024 by default, as many as fq_codel has queues), which bounds
// both what is exposed and the state a stateful firewall keeps, and the key
// can rotate periodically. Note that cake in dual-srchost or triple-isolate
// mode counts each outer source address as a host, so a tunnel spread over N
// addresses weighs as N hosts there; the range bounds that too.
package flowspread
