package conn

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringSubs is what a batch submits to the send ring (merge): a header of
// the batch, or several of its one-datagram headers from one socket to
// one outer pair, merged into one UDP GSO send. Flows spread over ports
// share a port's socket and the peer's one address and port, so the
// datagrams of a mixed batch that share a port can leave as one
// super-datagram that the kernel cuts into the same datagrams: one ring
// entry, one route lookup and one source address choice where there were
// several. Per flow the order stays, since a flow's datagrams all leave
// from one socket to one pair, in the order of the batch.
type ringSubs struct {
	n    int
	hdrs [sendBatchSize]unix.Mmsghdr
	sock [sendBatchSize]uint16
	to   [sendBatchSize]bool // sendto: IORING_OP_SEND
	res  [sendBatchSize]int32
	// Per submission: its first header, headers, segment size and
	// bytes, whether another datagram may join, and where its iovecs
	// start in iovs.
	first, count, seg, total [sendBatchSize]int
	open                     [sendBatchSize]bool
	at                       [sendBatchSize]int
	iovs                     [sendBatchSize]unix.Iovec
	ctrl                     [sendBatchSize][ctrlWords]uint64
	// of is each header's submission.
	of [sendBatchSize]uint8
}

// merge builds b's ring submissions (b.subs), merging one-datagram
// headers from one socket to one outer pair, with the same ECN and
// control messages, into UDP GSO sends where gso; a header whose
// sendto is set and that stays alone keeps it. The caller holds r.mu.
func (r *msgRing) merge(b *sendBatch, gso bool) {
	s := &b.subs
	s.n = 0
	for h := range b.nhdr {
		j := -1
		// A datagram that may share a GSO send: alone in its header,
		// not empty, without IPV6_PKTINFO.
		single := gso && b.count[h] == 1 && b.total[h] > 0 && b.kind[h] != outerSpread
		if single {
			if k := r.openSub[b.sock[h]]; k >= 0 && s.open[k] && b.mergeable(s.first[k], h) &&
				b.total[h] <= s.seg[k] && s.count[k] < maxGSOSegments && s.total[k]+b.total[h] <= maxGSOBytes {
				j = int(k)
			}
		}
		if j < 0 {
			j = s.n
			s.n++
			s.first[j], s.count[j], s.seg[j], s.total[j] = h, 0, b.total[h], 0
			s.open[j] = single
			if s.open[j] {
				if r.openSub[b.sock[h]] < 0 {
					r.touched = append(r.touched, b.sock[h])
				}
				r.openSub[b.sock[h]] = int16(j)
			}
		}
		s.of[h] = uint8(j)
		s.count[j]++
		s.total[j] += b.total[h]
		s.open[j] = s.open[j] && b.total[h] == s.seg[j]
	}
	for _, sock := range r.touched {
		r.openSub[sock] = -1
	}
	r.touched = r.touched[:0]

	// Lay the submissions' iovecs out one after another, in the order
	// of the batch within each.
	at := 0
	for j := range s.n {
		s.at[j], at = at, at+s.count[j]
		s.count[j] = 0 // counted again as the iovecs go in
	}
	for h := range b.nhdr {
		j := s.of[h]
		s.iovs[s.at[j]+s.count[j]] = b.iovs[b.first[h]]
		s.count[j]++
	}
	for j := range s.n {
		h := s.first[j]
		s.sock[j] = b.sock[h]
		if s.count[j] == 1 {
			s.hdrs[j], s.to[j] = b.hdrs[h], b.sendto[h]
			continue
		}
		s.to[j] = false
		hdr := &s.hdrs[j].Hdr
		*hdr = b.hdrs[h].Hdr
		hdr.Iov = &s.iovs[s.at[j]]
		hdr.SetIovlen(s.count[j])
		ctrl := unsafe.Slice((*byte)(unsafe.Pointer(&s.ctrl[j][0])), ctrlWords*8)
		n := copy(ctrl, b.ctrlBytes(h)[:b.hdrs[h].Hdr.Controllen])
		n = cmsgAlign(n)
		n += putU16Cmsg(ctrl[n:], unix.SOL_UDP, unix.UDP_SEGMENT, uint16(s.seg[j]))
		hdr.Control = &ctrl[0]
		hdr.SetControllen(n)
	}
}

// mergeable reports whether one-datagram header h may join the GSO send
// that header first starts: same socket, destination, ECN and kind, and
// so the same control messages but for UDP_SEGMENT.
func (b *sendBatch) mergeable(first, h int) bool {
	return b.sock[h] == b.sock[first] && b.ecn[h] == b.ecn[first] && b.kind[h] == b.kind[first] &&
		b.names[h] == b.names[first]
}
