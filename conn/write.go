package conn

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"

	"github.com/flowspread/flowspread/flowaddr"
)

var (
	errBadPeer     = errors.New("conn: destination is not a valid address with a nonzero port")
	errAddressType = errors.New("conn: unsupported destination address type: use *conn.FlowAddr or *net.UDPAddr")
)

// WriteTo implements [net.PacketConn]. A *[FlowAddr] destination spreads
// the datagram by its flow; a *[net.UDPAddr] sends it unspread, from the
// socket's default source address. It does not retain p.
func (c *FlowSpreadConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	switch a := addr.(type) {
	case *FlowAddr:
		return c.WriteFlow(p, a.Peer, a.Flow)
	case *net.UDPAddr:
		return c.WriteFlow(p, a.AddrPort(), Flow{})
	default:
		return 0, c.opError("write", addr, errAddressType)
	}
}

// WriteFlow sends p to peer as one datagram of flow f: from our range's
// address for the flow to the peer's range's address for it, with the
// flow's ECN codepoint (and flow label, if configured) on the outer
// header. A peer that is not in Config.Peers, or an unclassified f, goes
// out unspread: from the socket's default source to peer.
//
// It blocks only while the send buffer is full, until the write deadline.
// It is safe for concurrent use, does not retain p, and does not allocate.
func (c *FlowSpreadConn) WriteFlow(p []byte, peer netip.AddrPort, f Flow) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("write", nil, net.ErrClosed)
	}
	if err := c.writeFlow(p, peer, f); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteBatch sends msgs[i].Buf to msgs[i].Peer as flow msgs[i].Flow, for
// each i, as [FlowSpreadConn.WriteFlow] does, with as few system calls as
// it can: sendmmsg, and UDP GSO for runs of consecutive datagrams of one
// flow and size (the last may be shorter). It sets msgs[i].N to the
// length sent.
//
// It returns how many messages were sent. On error, that many were sent
// and msgs[n] was not; the caller may retry from msgs[n+1]. It does not
// retain the buffers and does not allocate. It is safe for concurrent use.
func (c *FlowSpreadConn) WriteBatch(msgs []Message) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("write", nil, net.ErrClosed)
	}
	return c.writeBatch(msgs)
}

// outerHdr is what one outgoing datagram's outer headers carry beyond its
// payload. Datagrams with equal outerHdrs and sizes may share one GSO
// super-datagram.
type outerHdr struct {
	dst   [16]byte
	src   [16]byte // with kind == outerSpread
	scope uint32
	label uint32
	port  uint16
	// sock is the socket to send from: 0 for the canonical port's,
	// 1+i for port i of our range.
	sock uint16
	ecn  flowaddr.ECN
	// ecnBySock says sock marks ecn on every datagram itself (one of
	// ecnConns): no IPV6_TCLASS message.
	ecnBySock bool
	// tclassAlways says the datagram carries IPV6_TCLASS even for
	// Not-ECT (FlowSpreadConn.portTClass).
	tclassAlways bool
	kind         uint8
	// path is pathSpread for a datagram on the pair its flow maps to (or
	// unspread for no path reason), pathWaiting for one sent on the
	// canonical pair because its spread pair is not known open, and
	// pathProbe for a probe copy: a GSO run never mixes them, so Stats
	// can count them per run.
	path uint8
}

// Kinds of outerHdr.
const (
	outerDefault = iota // IPv6, source chosen by the kernel
	outerSpread         // IPv6, source from our range (IPV6_PKTINFO)
	outerIPv4           // an IPv4 peer, as a v4-mapped destination
)

// peerMemo remembers the last peer a send looked up: a batch usually goes
// to one peer, so its messages need the peer table's map only once. A memo
// belongs to one call; its zero value remembers nothing. It also holds the
// peer table the call started with, so a SetPeer during the call changes
// nothing halfway through a batch.
type peerMemo struct {
	t     *peerTable
	addr  netip.AddrPort
	route peerRoute
	valid bool
	now   uint32 // the path clock, read once per call when needed; 0: not yet
}

// table returns the peer table of the call, loading it the first time.
func (m *peerMemo) table(c *FlowSpreadConn) *peerTable {
	if m.t == nil {
		m.t = c.peers.Load()
	}
	return m.t
}

// byCanonical returns the route to the peer whose canonical address is
// ap, or noRoute, as peerTable.byCanonical does.
func (m *peerMemo) byCanonical(t *peerTable, ap netip.AddrPort) *peerRoute {
	if !m.valid || m.addr != ap {
		m.addr, m.route, m.valid = ap, t.byCanonical(ap), true
	}
	return &m.route
}

// outerFor fills o for a datagram of flow f to peer and returns the
// bucket of its source address, or -1 when it goes out from no address of
// our range, and how it goes out (paths.go): on its spread pair
// (pathSpread), or, while that pair is not known open, on the canonical
// pair (pathWaiting), after a probe copy on the spread pair (pathProbe).
// For those two, o is the probe's header: the caller sends the probe, if
// any, then the datagram with o turned to the canonical pair by waitOn.
// memo carries the peer lookup and the clock from one message of a batch
// to the next.
//
// With a contiguous range (the default) it reads only the peer's route,
// found with one map probe, and our own Mapper, which stays in the cache;
// for a peer that is not Open, also the flow's path slot.
func (c *FlowSpreadConn) outerFor(peer netip.AddrPort, f Flow, o *outerHdr, memo *peerMemo) (int32, uint8, error) {
	if !peer.IsValid() || peer.Port() == 0 {
		return -1, pathSpread, errBadPeer
	}
	addr := peer.Addr()
	*o = outerHdr{dst: addr.As16(), port: peer.Port(), ecn: f.ECN & 3}
	v4 := addr.Is4() || addr.Is4In6()
	if v4 {
		o.kind = outerIPv4
	}
	r := &noRoute
	if f.Valid || addr.Zone() != "" {
		r = memo.byCanonical(memo.table(c), peer)
	}
	if addr.Zone() != "" {
		if r.index >= 0 {
			o.scope = r.scope
		} else {
			o.scope = zoneIndex(addr.Zone())
		}
	}
	if !f.Valid || r.index < 0 {
		return -1, pathSpread, nil
	}
	path := pathSpread
	if r.paths != nil || r.open {
		path = c.pathFor(r, f.Hash, memo)
		if path == pathSpread && r.translated {
			if o.port = r.paths.learnedPort(f.Hash); o.port == 0 {
				path = pathWaiting
			}
		}
		if path == pathWaiting {
			c.waitOn(o, peer)
			return -1, pathWaiting, nil
		}
	}
	switch r.dst {
	case routeContiguous:
		// A contiguous range never crosses a /64 boundary, so the low
		// half does not carry (flowaddr.Mapper.AddrWords).
		putWords(&o.dst, r.firstHi, r.firstLo+f.Hash>>r.shift)
	case routeMapper:
		m := memo.t.peers[r.index].mapper
		hi, lo := m.AddrWords(m.Bucket(f.Hash))
		putWords(&o.dst, hi, lo)
	}
	if r.portBits != 0 && !r.translated {
		o.port = r.portFirst + portIndex(f.Hash, 32-r.portBits)
	}
	b := int32(-1)
	if c.local != nil && !v4 {
		b = int32(c.local.Bucket(f.Hash))
		hi, lo := c.local.AddrWords(uint32(b))
		putWords(&o.src, hi, lo)
		o.kind = outerSpread
	}
	if c.ports.Len() > 0 {
		o.sock = 1 + portIndex(f.Hash, c.portShift)
	}
	if c.flowLabel && !v4 {
		o.label = flowLabel(&o.src, &o.dst, c.srcPort(o), o.port)
	}
	o.tclassAlways = c.portTClass && o.sock > 0 && o.kind == outerDefault
	if o.kind == outerSpread && o.sock == 0 {
		if s := c.ecnSock[o.ecn]; s != 0 {
			o.sock, o.ecnBySock = s, true
		}
	}
	o.path = path
	return b, path, nil
}

// srcPort returns the source port of a datagram with header o.
func (c *FlowSpreadConn) srcPort(o *outerHdr) uint16 {
	switch {
	case o.sock > 0 && int(o.sock) <= c.ports.Len():
		return c.ports.Port(int(o.sock - 1))
	case c.localAddr == nil: // a conn that never listened, in tests
		return 0
	}
	return uint16(c.localAddr.Port)
}

// waitOn turns o, the header of a datagram to a peer's canonical address
// or of a probe copy, into the header of the datagram on the canonical
// pair, from the socket's default source, that waits for its spread pair
// to open.
func (c *FlowSpreadConn) waitOn(o *outerHdr, peer netip.AddrPort) {
	o.dst, o.src, o.path, o.port, o.sock = peer.Addr().As16(), [16]byte{}, pathWaiting, peer.Port(), 0
	o.kind, o.label, o.ecnBySock, o.tclassAlways = outerDefault, 0, false, false
	if a := peer.Addr(); a.Is4() || a.Is4In6() {
		o.kind = outerIPv4
		return
	}
	if c.flowLabel {
		o.label = flowLabel(&o.src, &o.dst, c.srcPort(o), o.port)
	}
}

// putWords stores an address given as two big-endian halves in a.
func putWords(a *[16]byte, hi, lo uint64) {
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
}

// flowLabel derives a nonzero 20-bit IPv6 flow label (RFC 6438: the same
// for every packet of a flow; zero means none) from the outer address
// and port pair, not from the flow hash: every flow of a bucket gets the
// same label, so the label shows an observer nothing the addresses and
// ports do not (at most one label per pair, so the range still bounds
// what can be counted), and a hop that hashes {src, dst, label} in place
// of the ports, as Linux does for a nonzero label, isolates exactly the
// buckets, as one that hashes the 5-tuple does: with ports in the range,
// a label of the addresses alone would put every flow in one queue there.
// src is zero when the kernel picks the source. The mix needs no key: its
// input is on the wire.
func flowLabel(src, dst *[16]byte, srcPort, dstPort uint16) uint32 {
	h := mix64(uint64(srcPort)<<16 | uint64(dstPort))
	h = mix64(h ^ binary.LittleEndian.Uint64(src[:8]))
	h = mix64(h ^ binary.LittleEndian.Uint64(src[8:]))
	h = mix64(h ^ binary.LittleEndian.Uint64(dst[:8]))
	h = mix64(h ^ binary.LittleEndian.Uint64(dst[8:]))
	if l := uint32(h >> 44); l != 0 {
		return l
	}
	return 1
}

// mix64 is SplitMix64's finalizer: each input bit flips about half the
// output bits, so labels spread evenly over the 20 bits.
func mix64(x uint64) uint64 {
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// zoneIndex returns the interface index a zone names, or 0. It allocates;
// configured peers have theirs looked up once by Listen.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// udpAddr returns ap as a net.Addr for an error, or nil.
func udpAddr(ap netip.AddrPort) net.Addr {
	if !ap.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(ap)
}
