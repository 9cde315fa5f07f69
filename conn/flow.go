package conn

import (
	"net/netip"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
)

// Flow is what a sender needs to know about an inner packet: its flow hash
// and the ECN codepoint for the outer header. It is small and comparable.
// The zero Flow is unclassified: the datagram goes out unspread, from the
// socket's default source address to the peer's canonical address.
type Flow struct {
	// Hash is the keyed flow hash; it picks the outer address pair.
	Hash uint64
	// ECN is the codepoint to set in the outer header: [flowaddr.OuterECN]
	// of the inner packet's (RFC 6040 normal mode), so congestion marks
	// on the path reach the inner flow.
	ECN flowaddr.ECN
	// Valid says Hash was computed from a flow key.
	Valid bool
}

// FlowAddr is a destination for [FlowSpreadConn.WriteTo] that carries the
// flow of the datagram: WriteTo spreads it. *FlowAddr implements
// [net.Addr].
type FlowAddr struct {
	Peer netip.AddrPort
	Flow Flow
}

// Network returns "udp".
func (a *FlowAddr) Network() string { return "udp" }

// String returns the peer's address.
func (a *FlowAddr) String() string { return a.Peer.String() }

// Classify returns the flow of an inner (plaintext) packet, to be passed
// with its ciphertext to [FlowSpreadConn.WriteFlow], WriteTo or
// WriteBatch. It finds the innermost transport 5-tuple with
// [flowaddr.ParseInto] (the flow-symmetric canonical form when
// Config.Symmetric), hashes it with the conn's policy, and takes the ECN
// codepoint from the IP header. A packet without a usable flow key gives
// an unclassified Flow (still with its ECN codepoint).
//
// Classify reads the clock only for a policy that uses it: never for a
// [hash.Static] (the default), once per packet for any other. It is safe
// for concurrent use, does not retain inner, and does not allocate.
func (c *FlowSpreadConn) Classify(inner []byte) Flow {
	var f Flow
	if e, ok := flowaddr.PacketECN(inner); ok {
		f.ECN = flowaddr.OuterECN(e)
	}
	var key flowaddr.Key
	if err := flowaddr.ParseInto(&key, inner); err != nil && key == (flowaddr.Key{}) {
		return f
	}
	if c.symmetric {
		key.Canonicalize()
	}
	f.Hash = c.flowHash(&key)
	f.Valid = true
	return f
}

// flowHash hashes key with the conn's policy. The key's bytes go by value
// (hash.Input), so the interface call does not move them to the heap.
func (c *FlowSpreadConn) flowHash(key *flowaddr.Key) uint64 {
	var now int64
	if !c.timeless {
		now = time.Now().UnixNano()
	}
	return c.policy.FlowHash(key.Bytes(), now)
}
