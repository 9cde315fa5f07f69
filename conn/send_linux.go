package conn

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
)

const (
	// sendBatchSize is how many datagrams one sendmmsg call carries.
	sendBatchSize = 64
	// maxGSOSegments is the kernel's UDP_MAX_SEGMENTS on every kernel
	// with UDP GSO (newer ones allow more).
	maxGSOSegments = 64
	// maxGSOBytes bounds a super-datagram's payload: one UDP datagram's
	// length field (65535) less its header, rounded down.
	maxGSOBytes = 65000

	sizeofPtr   = int(unsafe.Sizeof(uintptr(0)))
	cmsgHdrLen  = (unix.SizeofCmsghdr + sizeofPtr - 1) &^ (sizeofPtr - 1)
	pktinfoLen  = unix.SizeofInet6Pktinfo
	pktinfoSize = cmsgHdrLen + (pktinfoLen+sizeofPtr-1)&^(sizeofPtr-1)
	intCmsgSize = cmsgHdrLen + (4+sizeofPtr-1)&^(sizeofPtr-1)
	// ctrlSize reserves room for every control message one datagram can
	// carry: IPV6_PKTINFO, IPV6_TCLASS (or IP_TOS) and UDP_SEGMENT.
	ctrlSize  = pktinfoSize + 2*intCmsgSize
	ctrlWords = (ctrlSize + 7) / 8
)

// sender is the per-conn send state.
type sender struct {
	gso     atomic.Bool // UDP GSO usable; cleared for good if the kernel refuses it
	batches sync.Pool   // *sendBatch
}

func (s *sender) init(caps socketCaps) {
	s.gso.Store(caps.gso)
	s.batches.New = func() any {
		b := new(sendBatch)
		b.write = b.sendmmsg // bound once, so RawConn.Write gets no fresh closure per call
		return b
	}
}

func (s *sender) gsoEnabled() bool { return s.gso.Load() }

// sendBatch holds the kernel structures of one sendmmsg call, built in
// place: a header per datagram or GSO run, an iovec per datagram. A batch
// is used by one goroutine at a time and reused through a pool, so the hot
// path does not allocate.
type sendBatch struct {
	hdrs  [sendBatchSize]unix.Mmsghdr
	iovs  [sendBatchSize]unix.Iovec
	names [sendBatchSize]unix.RawSockaddrInet6
	ctrl  [sendBatchSize][ctrlWords]uint64 // 8-byte aligned for cmsghdr

	// Per header h: its first datagram, how many datagrams it carries,
	// their segment size and total length, whether a later datagram may
	// still join (none may after a shorter one), and the bucket of their
	// source address (-1: unspread).
	first, count, seg, total [sendBatchSize]int
	open                     [sendBatchSize]bool
	bucket                   [sendBatchSize]int32
	path                     [sendBatchSize]uint8  // outerHdr.path: a run never mixes them
	sock                     [sendBatchSize]uint16 // outerHdr.sock: the socket to send from
	ecn                      [sendBatchSize]flowaddr.ECN
	kind                     [sendBatchSize]uint8 // outerHdr.kind
	// sendto marks the headers the ring sends with IORING_OP_SEND
	// (msgRing.pickSends).
	sendto [sendBatchSize]bool
	last   outerHdr // of the last header
	// flow is each datagram's flow hash, for groupable.
	flow [sendBatchSize]uint64

	nhdr, nmsg int

	// State of one sendmmsg loop, for the RawConn callback: it sends
	// pending, all from one socket, and counts those sent in
	// pendingSent. done marks the headers that the ring (msgRing) or a
	// group (flushGrouped) sent, which the loop skips.
	pending     []unix.Mmsghdr
	pendingSent int
	done        [sendBatchSize]bool
	res         [sendBatchSize]int32
	sent        int // headers sent, in order
	errno       unix.Errno
	write       func(fd uintptr) bool

	// subs is what the batch submits to the send ring (msgRing.merge).
	subs ringSubs

	// flushGrouped's copies of the headers of one socket, and where
	// each came from.
	group    [sendBatchSize]unix.Mmsghdr
	groupHdr [sendBatchSize]uint8
	// groupable's table of flows seen: a flow hash, its socket and the
	// generation (gen) that wrote the slot.
	seen [2 * sendBatchSize]seenFlow
	gen  uint32
}

type seenFlow struct {
	flow uint64
	sock uint16
	gen  uint32
}

func (b *sendBatch) reset() {
	for i := range b.nmsg {
		b.iovs[i] = unix.Iovec{} // do not keep the caller's buffers alive
	}
	b.pending = nil
	for h := range b.nhdr {
		b.done[h] = false
	}
	b.nhdr, b.nmsg, b.sent, b.errno = 0, 0, 0, 0
}

// add appends datagram p of flow hash with outer headers o. With gso it
// joins the previous header's run when it can.
func (b *sendBatch) add(p []byte, hash uint64, o *outerHdr, bucket int32, gso bool) {
	i := b.nmsg
	b.nmsg++
	b.flow[i] = hash
	if len(p) > 0 {
		b.iovs[i].Base = &p[0]
		b.iovs[i].SetLen(len(p))
	}
	if gso && b.nhdr > 0 {
		h := b.nhdr - 1
		if b.open[h] && len(p) > 0 && len(p) <= b.seg[h] && b.count[h] < maxGSOSegments &&
			b.total[h]+len(p) <= maxGSOBytes && b.last == *o {
			b.count[h]++
			b.total[h] += len(p)
			b.open[h] = len(p) == b.seg[h]
			return
		}
	}
	h := b.nhdr
	b.nhdr++
	b.first[h], b.count[h], b.seg[h], b.total[h] = i, 1, len(p), len(p)
	b.open[h] = len(p) > 0
	b.bucket[h] = bucket
	b.path[h] = o.path
	b.sock[h] = o.sock
	b.ecn[h], b.kind[h] = o.ecn, o.kind
	b.last = *o

	sa := &b.names[h]
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: o.dst, Scope_id: o.scope}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], o.port)
	binary.BigEndian.PutUint32((*[4]byte)(unsafe.Pointer(&sa.Flowinfo))[:], o.label)

	// Each put returns the end of its message; the next starts aligned.
	// The control length ends at the last message's data, without its
	// padding: the kernel copies up to 36 bytes (one IPV6_PKTINFO) on its
	// stack and allocates for anything longer, so a lone PKTINFO costs
	// no allocation per datagram.
	ctrl := b.ctrlBytes(h)
	n := 0
	if o.kind == outerSpread {
		n = putPktinfo(ctrl, &o.src)
	}
	if (o.ecn != 0 || o.tclassAlways) && !o.ecnBySock {
		if o.kind == outerIPv4 {
			n = putIntCmsg(ctrl[cmsgAlign(n):], unix.SOL_IP, unix.IP_TOS, int32(o.ecn)) + cmsgAlign(n)
		} else {
			n = putIntCmsg(ctrl[cmsgAlign(n):], unix.SOL_IPV6, unix.IPV6_TCLASS, int32(o.ecn)) + cmsgAlign(n)
		}
	}
	hdr := &b.hdrs[h].Hdr
	hdr.Name = (*byte)(unsafe.Pointer(sa))
	hdr.Namelen = unix.SizeofSockaddrInet6
	hdr.Iov = &b.iovs[i]
	hdr.Control = nil
	hdr.SetControllen(n)
	if n > 0 {
		hdr.Control = &ctrl[0]
	}
}

// finish completes the headers: iovec counts and UDP_SEGMENT for runs.
func (b *sendBatch) finish() {
	for h := range b.nhdr {
		hdr := &b.hdrs[h].Hdr
		hdr.SetIovlen(b.count[h])
		if b.count[h] > 1 {
			ctrl := b.ctrlBytes(h)
			n := cmsgAlign(int(hdr.Controllen))
			n += putU16Cmsg(ctrl[n:], unix.SOL_UDP, unix.UDP_SEGMENT, uint16(b.seg[h]))
			hdr.Control = &ctrl[0]
			hdr.SetControllen(n)
		}
	}
}

func (b *sendBatch) ctrlBytes(h int) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&b.ctrl[h][0])), ctrlWords*8)
}

// sendmmsg is the RawConn write callback: it sends the pending headers
// not yet sent, returning false to wait for room in the send buffer.
func (b *sendBatch) sendmmsg(fd uintptr) bool {
	for b.pendingSent < len(b.pending) {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&b.pending[b.pendingSent])), uintptr(len(b.pending)-b.pendingSent), 0, 0, 0)
		switch e {
		case 0:
			b.pendingSent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			b.errno = e
			return true
		}
	}
	return true
}

// putPktinfo writes an IPV6_PKTINFO control message at the start of b and
// returns the length of its header and data, CMSG_LEN: the next message
// starts at cmsgAlign of it.
func putPktinfo(b []byte, src *[16]byte) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_IPV6, unix.IPV6_PKTINFO
	h.SetLen(cmsgHdrLen + pktinfoLen)
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[cmsgHdrLen]))
	pi.Addr, pi.Ifindex = *src, 0
	return cmsgHdrLen + pktinfoLen
}

// putIntCmsg writes a control message carrying an int, as putPktinfo.
func putIntCmsg(b []byte, level, typ int32, v int32) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(cmsgHdrLen + 4)
	*(*int32)(unsafe.Pointer(&b[cmsgHdrLen])) = v
	return cmsgHdrLen + 4
}

// putU16Cmsg writes a control message carrying a uint16, as putPktinfo.
func putU16Cmsg(b []byte, level, typ int32, v uint16) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(cmsgHdrLen + 2)
	*(*uint16)(unsafe.Pointer(&b[cmsgHdrLen])) = v
	return cmsgHdrLen + 2
}

func (c *FlowSpreadConn) writeFlow(p []byte, peer netip.AddrPort, f Flow) error {
	var o outerHdr
	var memo peerMemo
	bucket, path, err := c.outerFor(peer, f, &o, &memo)
	if err != nil {
		return c.opError("write", nil, err)
	}
	b := c.snd.batches.Get().(*sendBatch)
	c.addPath(b, p, f.Hash, &o, bucket, path, peer, false)
	_, err = c.flush(b, peer)
	b.reset()
	c.snd.batches.Put(b)
	return err
}

func (c *FlowSpreadConn) writeBatch(msgs []Message) (int, error) {
	b := c.snd.batches.Get().(*sendBatch)
	defer c.snd.batches.Put(b)
	done := 0
	var memo peerMemo
	for done < len(msgs) {
		gso := c.snd.gso.Load()
		end := min(done+sendBatchSize, len(msgs))
		var badErr error
		var o outerHdr
		for i := done; i < end; i++ {
			if b.nmsg == sendBatchSize { // probe copies took the room
				end = i
				break
			}
			m := &msgs[i]
			bucket, path, err := c.outerFor(m.Peer, m.Flow, &o, &memo)
			if err != nil {
				badErr, end = err, i
				break
			}
			c.addPath(b, m.Buf, m.Flow.Hash, &o, bucket, path, m.Peer, gso)
		}
		var last netip.AddrPort
		if end > done {
			last = msgs[end-1].Peer
		}
		sent, err := c.flush(b, last)
		b.reset()
		for i := done; i < done+sent; i++ {
			msgs[i].N = len(msgs[i].Buf)
		}
		done += sent
		switch {
		case errors.Is(err, errGSORefused):
			continue // resend the rest without GSO
		case err != nil:
			return done, err
		case badErr != nil:
			return done, c.opError("write", nil, badErr)
		}
	}
	return done, nil
}

// addPath adds datagram p as outerFor said it goes: with path pathProbe,
// a copy on the spread pair first, then p on the canonical pair. A probe
// that finds the batch one datagram from full is skipped: its slot tries
// again within probeTicks.
func (c *FlowSpreadConn) addPath(b *sendBatch, p []byte, hash uint64, o *outerHdr, bucket int32, path uint8, peer netip.AddrPort, gso bool) {
	if path == pathProbe {
		if b.nmsg < sendBatchSize-1 {
			b.add(p, hash, o, -1, gso)
		}
		c.waitOn(o, peer)
		bucket = -1 // the datagram itself goes on the canonical pair
	}
	b.add(p, hash, o, bucket, gso)
}

// errGSORefused tells writeBatch to resend from the first unsent datagram:
// the kernel refused GSO, and it is now off.
var errGSORefused = errors.New("conn: the kernel refused UDP GSO")

// flush sends a built batch and counts what was sent. It returns how many
// datagrams were sent. to names the destination in errors.
func (c *FlowSpreadConn) flush(b *sendBatch, to netip.AddrPort) (int, error) {
	if b.nmsg == 0 {
		return 0, nil
	}
	b.finish()
	var err error
	if b.mixed() {
		if c.ring != nil {
			err = c.flushRing(b)
		}
		if err == nil && b.errno == 0 && b.sent < b.nhdr && b.groupable() {
			err = c.flushGrouped(b)
		}
	}
	for b.sent < b.nhdr && b.errno == 0 && err == nil {
		if b.done[b.sent] {
			b.sent++
			continue
		}
		// One sendmmsg loop per run of headers from one socket.
		sock := b.sock[b.sent]
		end := b.sent + 1
		for end < b.nhdr && b.sock[end] == sock && !b.done[end] {
			end++
		}
		b.pending, b.pendingSent = b.hdrs[b.sent:end], 0
		err = c.sockRC(sock).Write(b.write)
		b.sent += b.pendingSent
	}
	sent := b.nmsg
	if b.sent < b.nhdr {
		sent = b.first[b.sent]
	}
	sent -= c.count(b) // the caller's datagrams: probe copies are extra
	if err != nil {
		return sent, c.opError("write", udpAddr(to), unwrapOp(err))
	}
	if b.errno != 0 {
		if b.count[b.sent] > 1 && (b.errno == unix.EIO || b.errno == unix.EINVAL || b.errno == unix.EMSGSIZE) {
			// The kernel refused the super-datagram: no checksum offload
			// on the device or IPsec on the route (EIO), or a segment
			// larger than the path MTU (EINVAL; EMSGSIZE since Linux
			// 6.x). Fall back to plain datagrams for good, since it would
			// refuse again; a plain datagram that is too large for the
			// path is fragmented or refused on its own.
			c.snd.gso.Store(false)
			return sent, errGSORefused
		}
		c.stats.sendErrors.Add(1)
		return sent, c.opError("write", udpAddr(to), b.errno)
	}
	return sent, nil
}

// count adds the datagrams of the headers sent, b.sent, to the stats,
// with atomic adds per batch and per header, not per datagram, and
// returns how many of them were probe copies (a probe has its own
// header). Sent counts the caller's datagrams, not the copies.
func (c *FlowSpreadConn) count(b *sendBatch) int {
	if b.sent == 0 {
		return 0
	}
	var sent, bytes, unspread, gso, waiting, probes uint64
	for h := range b.sent {
		n := uint64(b.count[h])
		switch b.path[h] {
		case pathProbe:
			probes += n
			continue
		case pathWaiting:
			waiting += n
		}
		sent += n
		bytes += uint64(b.total[h])
		k, sock := b.bucket[h], b.sock[h]
		if k >= 0 {
			c.stats.buckets[k].Add(n)
		}
		if sock > 0 && int(sock) <= len(c.stats.ports) {
			c.stats.ports[sock-1].Add(n)
		}
		if k < 0 && sock == 0 && b.path[h] != pathWaiting {
			unspread += n
		}
		if n > 1 {
			gso++
		}
	}
	c.stats.sent.Add(sent)
	c.stats.sentBytes.Add(bytes)
	if unspread > 0 {
		c.stats.sentUnspread.Add(unspread)
	}
	if gso > 0 {
		c.stats.gsoSends.Add(gso)
	}
	if waiting > 0 {
		c.stats.sentWaiting.Add(waiting)
	}
	if probes > 0 {
		c.stats.sentProbes.Add(probes)
	}
	return int(probes)
}

// sockRC returns the socket that outerHdr.sock s names: the canonical
// one, a port's, or an ECN codepoint's.
func (c *FlowSpreadConn) sockRC(s uint16) syscall.RawConn {
	switch ports := uint16(len(c.portRC)); {
	case s == 0:
		return c.rc
	case s <= ports:
		return c.portRC[s-1]
	default:
		return c.ecnRC[s-1-ports]
	}
}

// groupable reports whether sending the batch socket by socket keeps
// each flow's datagrams in order: no flow has datagrams on two sockets.
// One may, for a batch or two, where its datagrams' ECN changes (a CE
// mark, pure ACKs among data) or its spread pair opens (a probe copy).
func (b *sendBatch) groupable() bool {
	b.gen++
	if b.gen == 0 { // wrapped: no slot may look written by this call
		b.seen = [len(b.seen)]seenFlow{}
		b.gen = 1
	}
	const mask = len(b.seen) - 1
	for h := range b.nhdr {
		sock := b.sock[h]
		for i := b.first[h]; i < b.first[h]+b.count[h]; i++ {
			f := b.flow[i]
			for k := int(f) & mask; ; k = (k + 1) & mask {
				e := &b.seen[k]
				if e.gen != b.gen {
					*e = seenFlow{flow: f, sock: sock, gen: b.gen}
					break
				}
				if e.flow == f {
					if e.sock != sock {
						return false
					}
					break
				}
			}
		}
	}
	return true
}

// flushGrouped sends the headers of a batch not yet sent with one
// sendmmsg per socket, copied together in their order, the sockets in
// the order they first appear, and marks those sent done. It leaves
// b.sent at the first header not sent. It stops at the first group that
// is not sent whole (an error, or a deadline while the send buffer is
// full): the caller's loop then sends the rest in order, and meets the
// error itself.
func (c *FlowSpreadConn) flushGrouped(b *sendBatch) error {
	var queued uint64 // bit h: header h is sent or in a group already
	for h := range b.nhdr {
		if b.done[h] {
			queued |= 1 << h
		}
	}
	var err error
	for first := range b.nhdr {
		if queued&(1<<first) != 0 {
			continue
		}
		sock, n := b.sock[first], 0
		for h := first; h < b.nhdr; h++ {
			if queued&(1<<h) == 0 && b.sock[h] == sock {
				b.group[n], b.groupHdr[n] = b.hdrs[h], uint8(h)
				queued |= 1 << h
				n++
			}
		}
		b.pending, b.pendingSent = b.group[:n], 0
		err = c.sockRC(sock).Write(b.write)
		for _, h := range b.groupHdr[:b.pendingSent] {
			b.done[h] = true
		}
		if err != nil || b.errno != 0 {
			b.errno = 0
			break
		}
	}
	for b.sent < b.nhdr && b.done[b.sent] {
		b.sent++
	}
	return err
}

// mixed reports whether the batch's headers leave from more than one
// socket.
func (b *sendBatch) mixed() bool {
	for h := 1; h < b.nhdr; h++ {
		if b.sock[h] != b.sock[0] {
			return true
		}
	}
	return false
}

// flushRing sends the headers of a batch that leaves from several
// sockets through the conn's io_uring (msgRing), all with one system
// call, and marks those sent done. It leaves b.sent at the first header
// not sent; a header the kernel refused sets b.errno, unless it only
// found its socket's buffer full (EAGAIN), which the caller's loop sends
// again, waiting for room. Headers after a refused one that went out are
// reported unsent, as sendmmsg reports them: on a retry they go twice,
// which a VPN's replay window drops. A batch that finds the ring busy
// (another goroutine sends) leaves everything to the caller's loop.
func (c *FlowSpreadConn) flushRing(b *sendBatch) error {
	if !c.ring.mu.TryLock() {
		return nil
	}
	defer c.ring.mu.Unlock()
	c.sockMu.RLock()
	defer c.sockMu.RUnlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	// The ring's registered sockets are in sock order: the canonical
	// one, then the range's.
	c.ring.pickSends(b)
	c.ring.merge(b, c.snd.gso.Load())
	s := &b.subs
	if err := c.ring.sendmsgs(s.hdrs[:s.n], s.sock[:s.n], s.to[:s.n], s.res[:s.n]); err != nil {
		return nil // the caller's loop sends them the old way
	}
	var gsoSends uint64
	for j := range s.n {
		switch res := s.res[j]; {
		case s.to[j] && res == -int32(unix.EINVAL):
			// A kernel before 6.1 takes no destination with
			// IORING_OP_SEND. The datagram did not go: the caller's
			// loop sends it with sendmmsg, and later batches with
			// IORING_OP_SENDMSG.
			c.ring.sendto = false
			s.res[j] = -int32(unix.EAGAIN)
		case s.count[j] > 1 && res >= 0:
			gsoSends++
		case s.count[j] > 1:
			// The kernel refused the merged super-datagram (see flush
			// for why it may): its datagrams go one by one through
			// the caller's loop, which reports their own errors.
			if res == -int32(unix.EIO) || res == -int32(unix.EINVAL) || res == -int32(unix.EMSGSIZE) {
				c.snd.gso.Store(false)
			}
			s.res[j] = -int32(unix.EAGAIN)
		}
	}
	if gsoSends > 0 {
		c.stats.gsoSends.Add(gsoSends)
	}
	for h := range b.nhdr {
		b.res[h] = s.res[s.of[h]]
		b.done[h] = b.res[h] >= 0
	}
	for b.sent < b.nhdr && b.done[b.sent] {
		b.sent++
	}
	if b.sent < b.nhdr && b.res[b.sent] != -int32(unix.EAGAIN) {
		b.errno = unix.Errno(-b.res[b.sent])
	}
	return nil
}

// sendtoLead is how many more of a socket's datagrams must want another
// ECN codepoint than want its IPV6_TCLASS before pickSends sets the
// option to that codepoint: enough that flows of two codepoints sharing a
// port rarely make it change, few enough that it soon follows a port
// whose flows all want one.
const sendtoLead = 16

// pickSends marks the headers of b that the ring can send with
// IORING_OP_SEND (b.sendto): one datagram each, without IPV6_PKTINFO,
// whose ECN is what their socket marks without a control message. Such
// a send copies no msghdr, iovec or control message, about 90 ns a
// datagram less than IORING_OP_SENDMSG (docs/performance.md). For the
// range's sockets, whose datagrams all carry their ECN in IPV6_TCLASS
// messages (FlowSpreadConn.portTClass), it first has each socket's
// IPV6_TCLASS option follow the codepoint its datagrams want, so that
// ECN-capable flows gain too. The caller holds r.mu.
func (r *msgRing) pickSends(b *sendBatch) {
	if !r.sendto {
		clear(b.sendto[:b.nhdr])
		return
	}
	for h := range b.nhdr {
		if s := b.sock[h]; s > 0 && b.count[h] == 1 && b.kind[h] == outerDefault {
			r.follow(s, b.ecn[h])
		}
	}
	for h := range b.nhdr {
		want := flowaddr.NotECT // a socket's own IPV6_TCLASS, or IP_TOS, unless followed
		if s := b.sock[h]; s > 0 && b.kind[h] == outerDefault {
			want = r.tclass[s]
		}
		b.sendto[h] = b.count[h] == 1 && b.total[h] > 0 && b.kind[h] != outerSpread && b.ecn[h] == want
	}
}

// follow counts a datagram of codepoint e from socket s toward setting
// the socket's IPV6_TCLASS option to another codepoint (sendtoLead), and
// sets it to e when the count is reached.
func (r *msgRing) follow(s uint16, e flowaddr.ECN) {
	if e == r.tclass[s] {
		r.lead[s] = max(r.lead[s]-1, 0)
		return
	}
	if r.lead[s]++; r.lead[s] < sendtoLead {
		return
	}
	r.lead[s] = 0
	if unix.SetsockoptInt(int(r.fds[s]), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(e)) == nil {
		r.tclass[s] = e
	}
}
