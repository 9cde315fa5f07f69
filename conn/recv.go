package conn

import (
	"net/netip"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
)

// Message is one datagram of a batch, for [FlowSpreadConn.ReadBatch] and
// [FlowSpreadConn.WriteBatch].
//
// The caller owns Buf: a read fills Buf[:N] and never keeps Buf after the
// call returns. Apart from Buf a Message owns no memory, so a []Message
// can be reused from batch to batch without allocating.
type Message struct {
	// Buf holds the datagram's payload. A read fills Buf[:N]; a write sends
	// Buf as it is.
	Buf []byte
	// N is the number of payload bytes a read put into Buf.
	N int
	// Peer is the peer's canonical address: what a read reports as the
	// datagram's source, whatever outer address it came from.
	Peer netip.AddrPort
	// Flow is the inner flow a write spreads the datagram by.
	Flow Flow
	// OuterSrc and OuterDst are the addresses and ports the datagram really
	// carried on the wire. OuterDst says which address of our prefix the
	// peer sent to.
	OuterSrc, OuterDst netip.AddrPort
	// ECN is the ECN codepoint of the outer IP header as it arrived
	// (RFC 3168, the two low bits of the IPv6 Traffic Class or IPv4 TOS).
	ECN flowaddr.ECN

	from peerRef // set by a read, for RecvInfo
}

// RecvInfo returns what [FlowSpreadConn.ReadMsg] would have returned for
// a datagram that a read put in m. Pass it to [FlowSpreadConn.Observe]:
// it carries the peer the read found, which spares Observe a lookup.
func (m *Message) RecvInfo() RecvInfo {
	return RecvInfo{Peer: m.Peer, OuterSrc: m.OuterSrc, OuterDst: m.OuterDst, ECN: m.ECN, from: m.from}
}

// receiver is a receive backend: the AnyIP socket (newAnyIPReceiver) or the
// raw AF_PACKET listener (newRawReceiver).
//
// A receiver fills msgs[:n]: Buf[:N], N, OuterSrc, OuterDst (with ports)
// and ECN (outer, from the Traffic Class), splits GRO super-datagrams into
// separate messages, and does not allocate per datagram. It drops and
// counts a datagram longer than the Buf it would fill, and may swap
// elements of msgs, keeping the order of those it fills, to move a
// datagram down with its buffer past dropped ones. It leaves Peer and
// Flow alone: mapping the outer source to a peer, and dropping datagrams
// from outside every peer's range, is FlowSpreadConn's work.
//
// All methods are safe for concurrent use; concurrent readBatch calls are
// served one after the other.
type receiver interface {
	// readBatch blocks until at least one datagram is there, fills up to
	// len(msgs) messages and returns how many it filled. When the read
	// deadline passes it returns an error wrapping os.ErrDeadlineExceeded;
	// after close, an error wrapping net.ErrClosed.
	readBatch(msgs []Message) (int, error)
	setReadDeadline(t time.Time) error
	// close unblocks every blocked readBatch, which then returns an error
	// wrapping net.ErrClosed. Calling it again returns nil.
	close() error
	// caps reports what the backend found the kernel supports when it
	// opened.
	caps() recvCaps
}

// recvCaps says what a receive backend found the kernel supports at open.
type recvCaps struct {
	// Batch: several datagrams per system call (recvmmsg(2)).
	Batch bool
	// GRO: the kernel hands UDP datagrams of one flow over coalesced
	// (UDP_GRO, Linux 5.0), and the backend splits them again.
	GRO bool
	// Steered: the datagrams to every port of Range.Ports come to the
	// canonical socket (portSteer).
	Steered bool
}

// recvDrops counts datagrams a receive backend threw away before
// [FlowSpreadConn] saw them, and the link events it rode out. The
// counters only grow.
type recvDrops struct {
	// Truncated datagrams were longer than the caller's buffer, or frames
	// shorter than the headers they claim.
	Truncated uint64
	// BadChecksum datagrams failed UDP checksum verification (raw backend
	// only: on the AnyIP socket the kernel checks and drops them itself).
	BadChecksum uint64
	// LinkDown counts the times the raw backend's interface went down or
	// away under it; Rebound, the times it bound to the interface again
	// after it was re-created under the same name.
	LinkDown, Rebound uint64
	// BadSource frames were refused because the kernel's own IPv6 input
	// would have refused them (Raw backend only): frames not addressed to
	// this host's link address (promiscuous NICs, bridge ports), frames
	// for another interface stacked on this one (a VLAN), and sources
	// that are v4-mapped, loopback, multicast or unspecified.
	BadSource uint64
	// FragmentsDropped counts IPv6 fragments thrown away (Raw backend
	// only): overlapping (RFC 5722), malformed or beyond the reassembly
	// limits, and those of datagrams never completed in time or pushed
	// out to make room. Reassembled counts the datagrams put back
	// together from fragments, not a drop.
	FragmentsDropped, Reassembled uint64
}

// dropCounter is the optional ability of a receiver to report what it
// dropped; FlowSpreadConn finds it by type assertion.
type dropCounter interface {
	drops() recvDrops
}
