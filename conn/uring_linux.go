package conn

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
)

// The io_uring ABI (include/uapi/linux/io_uring.h): what msgRing uses.
const (
	ioringOffSQRing   = 0
	ioringOffSQEs     = 0x10000000
	ioringFeatSingle  = 1 << 0 // IORING_FEAT_SINGLE_MMAP
	ioringOpSendmsg   = 9
	ioringOpRecvmsg   = 10
	ioringOpSend      = 26
	ioringEnterEvents = 1      // IORING_ENTER_GETEVENTS
	ioringSetupAll    = 1 << 7 // IORING_SETUP_SUBMIT_ALL: go on past a failed entry
	ioringOffCQRing   = 0x8000000
	ioringRegFiles    = 2      // IORING_REGISTER_FILES
	ioringUnregFiles  = 3      // IORING_UNREGISTER_FILES
	iosqeFixedFile    = 1 << 0 // IOSQE_FIXED_FILE: fd indexes the registered files
	ringEntries       = max(sendBatchSize, anyIPSlots)
)

type ioSQRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type ioCQRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type ioUringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  ioSQRingOffsets
	cqOff                                                                  ioCQRingOffsets
}

type ioUringSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, msgFlags uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	addrLen, pad3 uint16 // the destination's length, with ioringOpSend
	addr3, pad    uint64
}

type ioUringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// msgRing runs the sendmsg(2) or recvmsg(2) calls of one batch on
// several sockets (the ports of our range) with one io_uring_enter(2):
// sendmmsg and recvmmsg take one socket, so a batch of 64 datagrams of
// mixed flows spread over 64 ports would otherwise cost up to 64 system
// calls, and a system call costs microseconds in a virtual machine. A conn
// has one ring for sending, used by one batch at a time (a batch that
// finds it busy sends the old way), and its reader has one of its own.
type msgRing struct {
	mu     sync.Mutex
	fd     int
	ring   []byte // the SQ and CQ rings (one mapping)
	sqeMem []byte
	sqes   []ioUringSQE
	cqes   []ioUringCQE

	sqHead, sqTail, cqHead, cqTail *atomic.Uint32
	sqMask, cqMask                 uint32
	sqArray                        []uint32

	// A send ring's state for IORING_OP_SEND (pickSends), under mu:
	// whether the kernel takes a destination with it (Linux 6.1;
	// cleared for good when refused), and for each registered socket
	// fds[i], the ECN its IPV6_TCLASS option marks and the datagrams
	// that wanted another codepoint less those that wanted it.
	sendto bool
	// sendtoSkew is added to every IORING_OP_SEND's destination length:
	// 0, but for a test that makes the kernel refuse them, as one
	// before Linux 6.1 does.
	sendtoSkew uint16
	fds        []int32
	tclass     []flowaddr.ECN
	lead       []int16
	// merge's per-batch table: each socket's open submission (-1:
	// none), and the sockets it set.
	openSub []int16
	touched []uint16
}

// newMsgRing sets up a ring for the sockets fds, or returns an
// error where the kernel has no io_uring (before 5.1, or turned off by
// kernel.io_uring_disabled or a seccomp filter). The sockets are
// registered with the ring, which saves a descriptor lookup per datagram
// and holds each socket open until the ring is closed.
func newMsgRing(fds []int32) (*msgRing, error) {
	var p ioUringParams
	p.flags = ioringSetupAll
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, os.NewSyscallError("io_uring_setup", errno)
	}
	r := &msgRing{fd: int(fd), sendto: true, fds: fds,
		tclass: make([]flowaddr.ECN, len(fds)), lead: make([]int16, len(fds)),
		openSub: make([]int16, len(fds)), touched: make([]uint16, 0, len(fds))}
	for i := range r.openSub {
		r.openSub[i] = -1
	}
	if p.features&ioringFeatSingle == 0 {
		r.close()
		return nil, errors.New("io_uring without IORING_FEAT_SINGLE_MMAP (Linux < 5.4)")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(ioUringCQE{})))
	var err error
	if r.ring, err = unix.Mmap(r.fd, ioringOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, os.NewSyscallError("mmap", err)
	}
	sqeSize := int(p.sqEntries) * int(unsafe.Sizeof(ioUringSQE{}))
	if r.sqeMem, err = unix.Mmap(r.fd, ioringOffSQEs, sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, os.NewSyscallError("mmap", err)
	}
	u32 := func(off uint32) *atomic.Uint32 { return (*atomic.Uint32)(unsafe.Pointer(&r.ring[off])) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), *(*uint32)(unsafe.Pointer(&r.ring[p.sqOff.ringMask]))
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), *(*uint32)(unsafe.Pointer(&r.ring[p.cqOff.ringMask]))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Pointer(&r.ring[p.sqOff.array])), p.sqEntries)
	r.sqes = unsafe.Slice((*ioUringSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*ioUringCQE)(unsafe.Pointer(&r.ring[p.cqOff.cqes])), p.cqEntries)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), ioringRegFiles,
		uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), 0, 0); errno != 0 {
		r.close()
		return nil, os.NewSyscallError("io_uring_register", errno)
	}
	return r, nil
}

// close releases the ring. It unregisters the sockets first: the kernel
// tears a closed ring down later, on a work queue, and until then its
// registered sockets would stay bound, so that a conn opened again at
// once on the same ports would find them in use.
func (r *msgRing) close() {
	unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), ioringUnregFiles, 0, 0, 0, 0)
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.ring != nil {
		unix.Munmap(r.ring)
	}
	unix.Close(r.fd)
}

// sendmsgs sends hdrs[i] on the socket registered at index socks[i],
// each with sendmsg(2), or where sendto[i], with sendto(2) of its one
// buffer to its name (its control message is left out), and sets res[i]
// to its result: the bytes sent, or a negative errno (-EAGAIN where the
// socket's buffer was full: io_uring does not wait on a non-blocking
// socket). The caller holds r.mu and keeps the headers and the buffers
// they point to alive until it returns.
func (r *msgRing) sendmsgs(hdrs []unix.Mmsghdr, socks []uint16, sendto []bool, res []int32) error {
	return r.run(ioringOpSendmsg, 0, hdrs, socks, sendto, res)
}

// recvmsgs reads one datagram into each hdrs[i] from the socket
// registered at index socks[i], with recvmsg(2), and sets res[i] to its
// result: the bytes read, or a negative errno (-EAGAIN where the socket
// had nothing more). MSG_DONTWAIT makes an empty socket complete at once
// rather than wait in the ring, so every read is done when recvmsgs
// returns and none writes into a buffer later. The kernel updates each
// header's name, control and flags fields as recvmsg(2) does. The caller
// owns the ring (one reader) and keeps the headers and buffers alive
// until it returns.
func (r *msgRing) recvmsgs(hdrs []unix.Mmsghdr, socks []uint16, res []int32) error {
	return r.run(ioringOpRecvmsg, unix.MSG_DONTWAIT, hdrs, socks, nil, res)
}

// run submits op on each header, or ioringOpSend where sendto[i], and
// waits until all have completed.
func (r *msgRing) run(op uint8, msgFlags uint32, hdrs []unix.Mmsghdr, socks []uint16, sendto []bool, res []int32) error {
	n := uint32(len(hdrs))
	tail := r.sqTail.Load()
	for i := range n {
		k := (tail + i) & r.sqMask
		h := &hdrs[i].Hdr
		if sendto != nil && sendto[i] {
			r.sqes[k] = ioUringSQE{
				opcode:   ioringOpSend,
				flags:    iosqeFixedFile,
				fd:       int32(socks[i]),
				off:      uint64(uintptr(unsafe.Pointer(h.Name))), // addr2: the destination
				addr:     uint64(uintptr(unsafe.Pointer(h.Iov.Base))),
				len:      uint32(h.Iov.Len),
				msgFlags: msgFlags,
				userData: uint64(i),
				addrLen:  uint16(h.Namelen) + r.sendtoSkew,
			}
		} else {
			r.sqes[k] = ioUringSQE{
				opcode:   op,
				flags:    iosqeFixedFile,
				fd:       int32(socks[i]),
				addr:     uint64(uintptr(unsafe.Pointer(h))),
				len:      1,
				msgFlags: msgFlags,
				userData: uint64(i),
			}
		}
		r.sqArray[k] = k
	}
	r.sqTail.Store(tail + n)
	for submitted, done := uint32(0), uint32(0); done < n; {
		got, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n-submitted), uintptr(n-done), ioringEnterEvents, 0, 0)
		if errno != 0 && errno != unix.EINTR {
			return os.NewSyscallError("io_uring_enter", errno)
		}
		if errno == 0 {
			submitted += uint32(got)
		}
		head, ctail := r.cqHead.Load(), r.cqTail.Load()
		for ; head != ctail; head++ {
			c := &r.cqes[head&r.cqMask]
			res[c.userData] = c.res
			done++
		}
		r.cqHead.Store(head)
	}
	return nil
}
