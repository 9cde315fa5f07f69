package conn

import (
	"errors"
	"net"
	"net/netip"
	"os"

	"github.com/flowspread/flowspread/flowaddr"
)

// RecvInfo describes a datagram read by [FlowSpreadConn.ReadMsg].
type RecvInfo struct {
	// Peer is the sending peer's canonical address (Peer.Addr), whichever
	// address of its range the datagram came from.
	Peer netip.AddrPort
	// OuterSrc and OuterDst are the datagram's outer addresses and ports.
	OuterSrc, OuterDst netip.AddrPort
	// ECN is the outer header's ECN codepoint; after decrypting, pass it
	// with the inner packet to [FlowSpreadConn.Decapsulate].
	ECN flowaddr.ECN

	from peerRef // the peer the read found, so Observe need not look it up
}

// peerRef names the peer a read found: entry index of table, which is
// the peer table the read used. Its zero value names none: Observe then
// looks the peer up by its canonical address.
type peerRef struct {
	table *peerTable
	index int32
}

// ReadBatch reads datagrams into msgs[i].Buf and returns how many it
// filled. For each, it sets N, Peer (the canonical address of the sending
// peer), OuterSrc, OuterDst and ECN, and zeroes Flow. It blocks until at
// least one datagram from a peer arrives, the read deadline passes, or the
// conn is closed.
//
// Datagrams from a source that is no peer's, or from a peer's spread range
// to an address of our prefix outside our range, are dropped and counted
// in [Stats]; with Config.AcceptUnknown, those from a source that is no
// peer's are delivered instead, with their plain source as Peer. To drop
// them without copying, ReadBatch may swap elements of msgs: the first n
// hold the datagrams read, and the caller's buffers all stay in msgs.
//
// A datagram longer than its Buf is dropped and counted in
// Stats.RecvTruncated, in every backend: it is never delivered cut short.
//
// A link flap or a re-created interface under the Raw backend does not
// fail the read: it waits for the link (see Stats.RecvLinkDown).
//
// The caller owns every Buf; ReadBatch does not retain them and does not
// allocate. It is safe for concurrent use.
func (c *FlowSpreadConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	for {
		if c.closed.Load() {
			return 0, c.opError("read", nil, net.ErrClosed)
		}
		if c.host != nil {
			if n := c.host.take(msgs); n > 0 {
				if kept := c.accept(msgs[:n]); kept > 0 {
					return kept, nil
				}
				continue
			}
		}
		n, err := c.recv.readBatch(msgs)
		if n > 0 {
			if kept := c.accept(msgs[:n]); kept > 0 {
				return kept, nil
			}
		}
		if err != nil {
			if c.host != nil && errors.Is(err, os.ErrDeadlineExceeded) && !c.deadlinePassed() {
				// The host pump woke us: restore the caller's deadline,
				// then take what it queued (it queues before it wakes).
				c.restoreDeadline()
				continue
			}
			return 0, c.opError("read", nil, unwrapOp(err))
		}
	}
}

// accept keeps the datagrams from peers to our addresses (and, with
// AcceptUnknown, from strangers) at the front of msgs, fills in their
// Peer, counts the rest as drops, and returns how many it kept. A verdict depends only on the outer addresses, so it is
// reused while consecutive datagrams share them, as the segments of a GRO
// super-datagram and the datagrams of an unspread tunnel do.
func (c *FlowSpreadConn) accept(msgs []Message) int {
	t := c.peers.Load() // one table for the batch: SetPeer may swap it
	if t.learning {
		c.tickRecvClock()
	}
	kept := 0
	var bytes, unknown uint64
	// The verdict depends on the source and the destination address,
	// not the destination port: datagrams to the ports of our range
	// from one peer share it.
	var last struct {
		src   netip.AddrPort
		dst   netip.Addr
		peer  int32
		drop  dropReason
		valid bool
	}
	for i := range msgs {
		m := &msgs[i]
		if !last.valid || m.OuterSrc != last.src || m.OuterDst.Addr() != last.dst {
			last.src, last.dst, last.valid = m.OuterSrc, m.OuterDst.Addr(), true
			last.peer, last.drop = c.sourcePeer(t, m.OuterSrc, m.OuterDst)
		}
		switch last.drop {
		case dropForeign:
			c.stats.droppedForeign.Add(1)
			continue
		case dropOutsideRange:
			c.stats.droppedOutsideRange.Add(1)
			continue
		case dropBadSource:
			c.stats.droppedBadSource.Add(1)
			continue
		}
		if last.drop == keepUnknown {
			m.Peer = plainSource(m.OuterSrc)
			m.from = peerRef{}
			unknown++
		} else {
			m.Peer = t.peers[last.peer].addr()
			m.from = peerRef{t, last.peer}
		}
		m.Flow = Flow{}
		bytes += uint64(m.N)
		if i != kept {
			msgs[i], msgs[kept] = msgs[kept], msgs[i]
		}
		kept++
	}
	if kept > 0 {
		c.stats.received.Add(uint64(kept))
		c.stats.receivedBytes.Add(bytes)
	}
	if unknown > 0 {
		c.stats.receivedUnknown.Add(unknown)
	}
	return kept
}

// plainSource is the address a datagram from a stranger is reported
// from: its outer source, with an IPv4 source as IPv4 (the socket reports
// it v4-mapped), so that writing back to it reaches the sender.
func plainSource(src netip.AddrPort) netip.AddrPort {
	if a := src.Addr(); a.Is4In6() {
		return netip.AddrPortFrom(a.Unmap(), src.Port())
	}
	return src
}

// dropReason says why accept drops a datagram, or how it keeps it.
type dropReason uint8

const (
	keep             dropReason = iota
	keepUnknown                 // from no peer, kept for AcceptUnknown
	dropForeign                 // from no peer
	dropOutsideRange            // from a peer's range, to our prefix outside our range
	dropBadSource               // from or to an address no datagram may have (badSource)
)

// sourcePeer returns the index of the peer a datagram from src to dst
// comes from, or why it must be dropped. It looks at dst's address
// alone, which accept relies on.
func (c *FlowSpreadConn) sourcePeer(t *peerTable, src, dst netip.AddrPort) (int32, dropReason) {
	if badSource(src.Addr(), dst.Addr()) {
		return -1, dropBadSource
	}
	pi, spread := t.bySource(src)
	if pi < 0 {
		if c.acceptUnknown {
			return -1, keepUnknown
		}
		return -1, dropForeign
	}
	if spread && c.local != nil && dst.IsValid() {
		// A peer spreading its sources spreads its destinations over
		// our range too, so a spread datagram to another address of
		// our prefix is not from a peer that agrees with our
		// configuration. Unspread datagrams, from the peer's canonical
		// address, go to our canonical address, wherever it is.
		a := dst.Addr().WithZone("")
		if c.prefix.Contains(a) {
			if _, ok := c.local.BucketOf(a.As16()); !ok {
				return -1, dropOutsideRange
			}
		}
	}
	return pi, keep
}

// ReadMsg reads one datagram into p and describes it. It blocks like
// [FlowSpreadConn.ReadBatch]. A datagram longer than p is dropped and
// counted in Stats.RecvTruncated, not delivered cut short: size p for the
// largest datagram a peer sends. It does not retain p and does not
// allocate.
func (c *FlowSpreadConn) ReadMsg(p []byte) (int, RecvInfo, error) {
	one := c.readers.Get().(*[1]Message)
	one[0] = Message{Buf: p}
	_, err := c.ReadBatch(one[:])
	m := &one[0]
	n, info := m.N, m.RecvInfo()
	one[0] = Message{}
	c.readers.Put(one)
	if err != nil {
		return 0, RecvInfo{}, err
	}
	return n, info, nil
}

// ReadFromAddrPort reads one datagram into p and returns its length and
// the canonical address of the peer that sent it. A datagram longer than
// p is dropped, as [FlowSpreadConn.ReadMsg] says. It does not allocate.
func (c *FlowSpreadConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	n, info, err := c.ReadMsg(p)
	return n, info.Peer, err
}

// ReadFrom implements [net.PacketConn]: it reads one datagram into p and
// returns the sending peer's canonical address as a *[net.UDPAddr].
// Writing a reply to that address sends it unspread; to spread it, reply
// with a [FlowAddr]. Unlike a plain UDP socket's, it drops a datagram
// longer than p, counting it, rather than return its first len(p) bytes.
// ReadFrom allocates the address; ReadFromAddrPort does not.
func (c *FlowSpreadConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, info, err := c.ReadMsg(p)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(info.Peer), nil
}

// Decapsulate applies the outer ECN codepoint of a received datagram to
// its decrypted inner packet, as RFC 6040 says: CE on the outer header
// marks the inner packet CE, in place. It reports drop when the inner
// packet must be dropped (CE outside on a Not-ECT packet inside) and
// counts such drops in [Stats]. It does not allocate.
func (c *FlowSpreadConn) Decapsulate(inner []byte, outer flowaddr.ECN) (drop bool, err error) {
	drop, err = flowaddr.Decapsulate(inner, outer)
	if drop {
		c.stats.droppedECN.Add(1)
	}
	return drop, err
}
