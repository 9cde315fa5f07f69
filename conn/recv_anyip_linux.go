package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn/internal/sockopt"
	"github.com/flowspread/flowspread/flowaddr"
)

const (
	// anyIPSlots is the most datagrams (or GRO super-datagrams) one
	// recvmmsg(2) call asks for.
	anyIPSlots = 64
	// groHead is the most of a caller's buffer a GRO read hands the
	// kernel: a datagram up to this long (every datagram of a VPN on a
	// 1500-byte path) lands in the caller's buffer, as without GRO.
	groHead = 4096
	// groBufLen holds the rest of the largest super-datagram UDP GRO
	// builds: 64 KiB of IP payload at most.
	groBufLen = 1 << 16
	// groSlotLen is a slot's own buffer: room to copy the head in front
	// of the rest, which makes a super-datagram one run of bytes.
	groSlotLen = groHead + groBufLen
	// anyIPOOBLen holds the control messages a datagram can carry here:
	// IPV6_PKTINFO (40 bytes with header), IPV6_TCLASS or IP_TOS (24),
	// UDP_GRO (24) and IPV6_ORIGDSTADDR (48), with room to spare.
	anyIPOOBLen = 160
)

// anyIPReceiver reads the datagrams of a UDP socket bound to [::]:port that
// an AnyIP local route (ip -6 route add local PREFIX dev lo) hands every
// address of the prefix. IPV6_PKTINFO tells which address each datagram was
// sent to, IPV6_TCLASS its outer ECN.
//
// The kernel writes each payload straight into the caller's buffer. With
// GRO a slot's buffers are the caller's (up to groHead bytes) and then
// one of the receiver's own, big enough for the rest of a super-datagram
// (64 KiB); readBatch copies a super-datagram's segments out into
// caller's buffers.
type anyIPReceiver struct {
	uc *net.UDPConn // the first socket: the canonical port's
	// rc is what reads wait on: uc, or with several sockets, their epoll
	// set's file.
	rc syscall.RawConn
	// set holds the sockets of a port range, read together; nil with one.
	set       *socketSet
	steer     *portSteer // nil unless c.Steered
	steerErr  error      // why not, where it was asked for
	c         recvCaps
	closed    atomic.Bool
	truncated atomic.Uint64

	mu sync.Mutex // serializes readBatch; guards everything below
	// One recvmmsg slot each. The headers point into iovs, names and oob.
	hdrs [anyIPSlots]unix.Mmsghdr
	iovs [anyIPSlots]unix.Iovec
	// groIovs is each slot's pair of buffers with GRO (see groHead).
	groIovs [anyIPSlots][2]unix.Iovec
	names   [anyIPSlots]unix.RawSockaddrInet6
	oob     [anyIPSlots * anyIPOOBLen]byte
	// slotPort is the port of the socket each slot was read from.
	slotPort [anyIPSlots]uint16
	// With holes, the last recv left the slots marked empty unread (a
	// socket set's ring read: a socket had fewer datagrams than slots).
	holes bool
	empty [anyIPSlots]bool
	// groBuf holds the GRO slots' own buffers, groSlotLen each;
	// allocated at open when GRO is on.
	groBuf []byte
	// pend lists, in order, the datagrams of the last GRO read not yet
	// handed out: its super-datagrams and whatever came after the first
	// one, pend[pendHead:pendTail].
	pend               [anyIPSlots]groRun
	pendHead, pendTail int

	// read is doRead as a func value made once, so RawConn.Read does not
	// allocate a closure per call. want, got and errno carry its
	// arguments and results.
	read  func(fd uintptr) bool
	want  int
	got   int
	errno syscall.Errno
}

// groRun is what is left to hand out of one received super-datagram.
type groRun struct {
	data     []byte // the segments not yet handed out
	seg      int    // segment size; 0: data is one datagram
	src, dst netip.AddrPort
	ecn      flowaddr.ECN
}

// newAnyIPReceiver makes the receive backend for socks, UDP sockets bound
// to [::] on their ports (FREEBIND and the local route are the caller's
// business): the canonical one, then those of the port range. It turns
// on IPV6_RECVPKTINFO and IPV6_RECVTCLASS (and IP_RECVTOS for IPv4 peers
// on a dual-stack socket), and UDP_GRO unless disableGRO or the kernel
// lacks it (before Linux 5.0); it probes recvmmsg(2) and falls back to
// recvmsg(2) one datagram at a time where it is missing.
//
// One socket is read through its [syscall.RawConn], so its deadlines
// apply. Several are read together as one (see socketSet); with steer,
// the receiver also tries to have the kernel hand the datagrams of them
// all to the first (portSteer). Closing the receiver closes the sockets.
func newAnyIPReceiver(socks []*net.UDPConn, disableGRO, steer bool) (receiver, error) {
	uc := socks[0]
	la, ok := uc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("conn: AnyIP receiver: socket has no UDP local address (%v)", uc.LocalAddr())
	}
	r := &anyIPReceiver{uc: uc}
	for i := range r.slotPort {
		r.slotPort[i] = uint16(la.Port)
	}
	var sc sockopt.RecvCaps
	for _, sock := range socks {
		rc, err := sock.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("conn: AnyIP receiver: %w", err)
		}
		var optErr error
		err = rc.Control(func(fd uintptr) { sc, optErr = sockopt.SetRecv(int(fd), !disableGRO) })
		if err == nil {
			err = optErr
		}
		if err != nil {
			return nil, fmt.Errorf("conn: AnyIP receiver: %w", err)
		}
		if r.rc == nil {
			r.rc = rc
		}
	}
	r.c.GRO = sc.GROErr == nil
	r.c.Batch = sc.BatchErr == nil
	if steer && len(socks) > 1 && r.c.Batch {
		r.steer, r.steerErr = steerPorts(socks)
		r.c.Steered = r.steer != nil
	}
	// Steered, every datagram comes to the first socket, which is read
	// alone, as without ports; the others only send.
	if len(socks) > 1 && !r.c.Steered {
		set, err := newSocketSet(r, socks)
		if err != nil {
			return nil, fmt.Errorf("conn: AnyIP receiver: %w", err)
		}
		r.set = set
		if r.rc, err = set.ep.SyscallConn(); err != nil {
			set.ep.Close()
			return nil, fmt.Errorf("conn: AnyIP receiver: %w", err)
		}
	}
	if r.c.GRO {
		r.groBuf = make([]byte, anyIPSlots*groSlotLen)
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.oob[i*anyIPOOBLen]
		if r.c.GRO {
			h.Iov = &r.groIovs[i][0]
			h.SetIovlen(2)
			r.groIovs[i][1].Base = &r.groBuf[i*groSlotLen+groHead]
			r.groIovs[i][1].SetLen(groBufLen)
		}
	}
	r.read = r.doRead
	return r, nil
}

func (r *anyIPReceiver) caps() recvCaps { return r.c }

func (r *anyIPReceiver) drops() recvDrops {
	return recvDrops{Truncated: r.truncated.Load()}
}

func (r *anyIPReceiver) setReadDeadline(t time.Time) error {
	if r.set != nil {
		return r.set.ep.SetReadDeadline(t)
	}
	return r.uc.SetReadDeadline(t)
}

func (r *anyIPReceiver) close() error {
	if r.closed.Swap(true) {
		return nil
	}
	var err error
	if r.steer != nil {
		r.steer.close()
	}
	if r.set != nil {
		err = r.set.close()
	}
	// The socket may be closed already by its owner; that is fine.
	if e := r.uc.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
		err = errors.Join(err, e)
	}
	return err
}

// readBatch implements [receiver]. It does not allocate once the socket is
// open, except to build an error.
func (r *anyIPReceiver) readBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.closed.Load() {
			return 0, net.ErrClosed
		}
		var n int
		var err error
		if r.c.GRO {
			n, err = r.readGRO(msgs)
		} else {
			n, err = r.readDirect(msgs)
		}
		if n > 0 || err != nil {
			return n, err
		}
		// Everything that arrived was dropped: wait for more.
	}
}

// recv runs recvmmsg(2) (or recvmsg(2) without batching) for the first
// want slots, waiting on the poller while the socket is empty.
func (r *anyIPReceiver) recv(want int) (int, error) {
	if !r.c.Batch {
		want = 1
	}
	for i := 0; i < want; i++ {
		h := &r.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(anyIPOOBLen)
		h.Flags = 0
	}
	r.want = want
	r.holes = false
	if err := r.rc.Read(r.read); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		if r.c.Batch {
			return 0, os.NewSyscallError("recvmmsg", r.errno)
		}
		return 0, os.NewSyscallError("recvmsg", r.errno)
	}
	return r.got, nil
}

// doRead is the RawConn.Read callback: false asks the poller to wait.
// With a socket set, fd is the set's epoll instance.
func (r *anyIPReceiver) doRead(fd uintptr) bool {
	if r.set != nil {
		return r.set.read(fd)
	}
	return r.recvFrom(fd)
}

// recvFrom reads the socket fd into the first r.want slots, or returns
// false when it is empty.
func (r *anyIPReceiver) recvFrom(fd uintptr) bool {
	for {
		var n uintptr
		var errno syscall.Errno
		if r.c.Batch {
			n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
				uintptr(r.want), 0, 0, 0)
		} else {
			n, _, errno = unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0].Hdr)), 0)
			if errno == 0 {
				r.hdrs[0].Len = uint32(n)
				n = 1
			}
		}
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.got, r.errno = int(n), errno
		return true
	}
}

// readDirect reads one datagram into each caller buffer, then drops the
// truncated ones (MSG_TRUNC: longer than the buffer), moving the later
// datagrams down with their buffers.
func (r *anyIPReceiver) readDirect(msgs []Message) (int, error) {
	want := min(len(msgs), anyIPSlots)
	for i := 0; i < want; i++ {
		r.iovs[i].Base = unsafe.SliceData(msgs[i].Buf)
		r.iovs[i].SetLen(len(msgs[i].Buf))
	}
	got, err := r.recv(want)
	// Keep no pointer to the caller's buffers past the call.
	for i := 0; i < want; i++ {
		r.iovs[i].Base = nil
	}
	if err != nil {
		return 0, err
	}
	out := 0
	for i := 0; i < got; i++ {
		if r.holes && r.empty[i] {
			continue
		}
		h := &r.hdrs[i]
		n := int(h.Len)
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			r.truncated.Add(1)
			continue
		}
		dst, ecn, _ := r.parseOOB(i)
		keepInPlace(msgs, out, i, n, sockaddrToAddrPort(&r.names[i]), dst, ecn)
		out++
	}
	return out, nil
}

// readGRO hands out what is still pending from the last read, or else
// reads a batch. A datagram that was not coalesced is in its caller's
// buffer already, as with readDirect. A super-datagram is copied out to
// its slot's own buffer and pended, and so is every datagram after it,
// which keeps a flow's datagrams in order; then the pending segments go
// into the buffers left free, and the rest waits for the next call.
func (r *anyIPReceiver) readGRO(msgs []Message) (int, error) {
	if r.pendHead < r.pendTail {
		return r.handOut(msgs), nil
	}
	want := min(len(msgs), anyIPSlots)
	for i := range want {
		head := min(len(msgs[i].Buf), groHead)
		r.groIovs[i][0].Base = unsafe.SliceData(msgs[i].Buf)
		r.groIovs[i][0].SetLen(head)
	}
	got, err := r.recv(want)
	// Keep no pointer to the caller's buffers past the call.
	for i := range want {
		r.groIovs[i][0].Base = nil
	}
	if err != nil {
		return 0, err
	}
	r.pendHead, r.pendTail = 0, 0
	out := 0
	for i := 0; i < got; i++ {
		if r.holes && r.empty[i] {
			continue
		}
		h := &r.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			// Cannot happen with 64 KiB behind the head; never split a
			// super-datagram whose end is missing.
			r.truncated.Add(1)
			continue
		}
		n := int(h.Len)
		dst, ecn, seg := r.parseOOB(i)
		src := sockaddrToAddrPort(&r.names[i])
		buf := msgs[i].Buf
		head := min(len(buf), groHead)
		rest := r.groBuf[i*groSlotLen+groHead:]
		if seg >= n {
			seg = 0 // one datagram
		}
		if seg == 0 && r.pendTail == 0 {
			if n > len(buf) {
				r.truncated.Add(1)
				continue
			}
			if n > head {
				copy(buf[head:n], rest)
			}
			keepInPlace(msgs, out, i, n, src, dst, ecn)
			out++
			continue
		}
		inHead := min(head, n)
		start := i*groSlotLen + groHead - inHead
		copy(r.groBuf[start:], buf[:inHead])
		r.pend[r.pendTail] = groRun{
			data: r.groBuf[start : start+n],
			seg:  seg,
			src:  src,
			dst:  dst,
			ecn:  ecn,
		}
		r.pendTail++
	}
	return out + r.handOut(msgs[out:]), nil
}

// keepInPlace hands out the n-byte datagram read into msgs[i]'s buffer
// as msgs[out] (out <= i). It moves the datagram down with its buffer:
// it fit the buffer it was read into, which a shorter one at out may not.
func keepInPlace(msgs []Message, out, i, n int, src, dst netip.AddrPort, ecn flowaddr.ECN) {
	if out != i {
		msgs[out], msgs[i] = msgs[i], msgs[out]
	}
	m := &msgs[out]
	m.N = n
	m.OuterSrc, m.OuterDst, m.ECN = src, dst, ecn
}

// handOut copies pending segments into msgs' buffers, in order, and
// returns how many it filled.
func (r *anyIPReceiver) handOut(msgs []Message) int {
	out := 0
	for out < len(msgs) && r.pendHead < r.pendTail {
		run := &r.pend[r.pendHead]
		n := len(run.data)
		if run.seg > 0 && run.seg < n {
			n = run.seg
		}
		m := &msgs[out]
		if n <= len(m.Buf) {
			copy(m.Buf, run.data[:n])
			m.N = n
			m.OuterSrc, m.OuterDst, m.ECN = run.src, run.dst, run.ecn
			out++
		} else {
			r.truncated.Add(1)
		}
		run.data = run.data[n:]
		if len(run.data) == 0 {
			run.data = nil
			r.pendHead++
		}
	}
	return out
}

// parseOOB reads slot i's control messages: the address the datagram was
// sent to (IPV6_PKTINFO, v4-mapped for IPv4, which is unmapped; or, where
// the socket takes the port range's datagrams, IPV6_ORIGDSTADDR or
// IP_ORIGDSTADDR, which also carry its port), its port (else the slot's
// socket's), its ECN
// (IPV6_TCLASS or IP_TOS) and the GRO segment size (UDP_GRO; 0 when the
// datagram is not coalesced). It does not allocate.
func (r *anyIPReceiver) parseOOB(i int) (dst netip.AddrPort, ecn flowaddr.ECN, seg int) {
	b := r.oob[i*anyIPOOBLen : i*anyIPOOBLen+int(r.hdrs[i].Hdr.Controllen)]
	port := r.slotPort[i]
	for len(b) > 0 {
		level, typ, data, rest, ok := nextCmsg(b)
		if !ok {
			break
		}
		switch {
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= 16:
			dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(data[:16])).Unmap(), 0)
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_ORIGDSTADDR && len(data) >= 24:
			// A sockaddr_in6: the port at 2, the address at 8.
			port = binary.BigEndian.Uint16(data[2:4])
			dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(data[8:24])).Unmap(), 0)
		case level == unix.IPPROTO_IP && typ == unix.IP_ORIGDSTADDR && len(data) >= 8:
			// A sockaddr_in: the port at 2, the address at 4.
			port = binary.BigEndian.Uint16(data[2:4])
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(data[4:8])), 0)
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_TCLASS && len(data) >= 4:
			ecn = flowaddr.ECN(binary.NativeEndian.Uint32(data) & 3)
		case level == unix.IPPROTO_IP && typ == unix.IP_TOS && len(data) >= 1:
			ecn = flowaddr.ECN(data[0] & 3)
		case level == unix.IPPROTO_UDP && typ == unix.UDP_GRO && len(data) >= 4:
			seg = int(binary.NativeEndian.Uint32(data))
		}
		b = rest
	}
	return netip.AddrPortFrom(dst.Addr(), port), ecn, seg
}

// sockaddrToAddrPort converts a source address the kernel filled in. IPv4
// sources on a dual-stack socket come v4-mapped and are unmapped. The
// scope of a link-local source is dropped: a zone would allocate, and the
// spread prefix is global.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), binary.BigEndian.Uint16(p[:]))
}
