package conn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setEvents is how many ready sockets one epoll_wait(2) reports.
const setEvents = 64

// socketSet reads the sockets of a port range together, as one: an epoll
// instance holds them all, level-triggered, and Go's poller waits on the
// instance as on one socket (an epoll fd is readable while any socket in
// it is). One reader thus serves every port, with one set of buffers and
// one recvmmsg(2) per ready socket, where a goroutine (or a
// wireguard-go ReceiveFunc, with its own batch of 64 KiB buffers) per
// socket would multiply both.
//
// With io_uring (msgRing), one system call reads a batch from all the
// ready sockets at once, the batch's slots shared out among them; a
// socket that filled its share stays ready for the next batch, one that
// came up short is drained. Without it, each read takes one recvmmsg(2)
// batch from the next ready socket. Either way a busy port cannot starve
// the others: the ready sockets are served in turn. The canonical socket
// (the first) is served last of each round: a probe
// copy (Config.Probe) leaves on its flow's port just before the same
// datagram leaves on the canonical pair, and the VPN learns the pair
// only from the copy it sees first (it drops the second as a replay), so
// when both wait, the copy on the port must be read first.
type socketSet struct {
	r     *anyIPReceiver
	ep    *os.File
	conns []*net.UDPConn
	ports []uint16
	// recv[i] reads socket i into r's slots under its RawConn.Control,
	// which keeps the descriptor from being closed and reused meanwhile;
	// made once, so a read allocates nothing.
	recv []func(fd uintptr)
	rcs  []interface{ Control(func(fd uintptr)) error }
	// got is what the last recv found: true, r.got and r.errno hold it.
	got bool

	events [setEvents]unix.EpollEvent
	// ready[:nready] are the indexes of the sockets to read next, in
	// turn: those epoll said were readable, and with the ring those that
	// filled their share of the last batch.
	ready  [setEvents]int32
	nready int

	// ringMu keeps Close from tearing the ring down under a read; ring is
	// nil without io_uring, and after close.
	ringMu sync.Mutex
	ring   *msgRing
	sock   [anyIPSlots]uint16 // the socket of each slot of a ring read
	res    [anyIPSlots]int32
	kept   [setEvents]int32
}

// newSocketSet puts socks into a new epoll instance for r.
func newSocketSet(r *anyIPReceiver, socks []*net.UDPConn) (*socketSet, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	s := &socketSet{r: r, ep: os.NewFile(uintptr(epfd), "epoll"), conns: socks}
	for i, sock := range socks {
		rc, err := sock.SyscallConn()
		if err != nil {
			s.ep.Close()
			return nil, err
		}
		var ctlErr error
		err = rc.Control(func(fd uintptr) {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
			ctlErr = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		})
		if err == nil {
			err = ctlErr
		}
		if err != nil {
			s.ep.Close()
			return nil, fmt.Errorf("add the socket of %v to the epoll set: %w", sock.LocalAddr(), err)
		}
		s.ports = append(s.ports, uint16(sock.LocalAddr().(*net.UDPAddr).Port))
		s.rcs = append(s.rcs, rc)
		s.recv = append(s.recv, func(fd uintptr) { s.got = r.recvFrom(fd) })
	}
	// A file the poller cannot watch would block a read for good.
	if err := s.ep.SetReadDeadline(time.Time{}); errors.Is(err, os.ErrNoDeadline) {
		s.ep.Close()
		return nil, errors.New("the runtime's poller cannot watch an epoll instance")
	}
	s.ring = s.openRing()
	return s, nil
}

// openRing sets up the reader's io_uring with the sockets registered, or
// returns nil where the kernel has none (reads then take a recvmmsg(2)
// per socket).
func (s *socketSet) openRing() *msgRing {
	fds := make([]int32, 0, len(s.rcs))
	for _, rc := range s.rcs {
		if err := rc.Control(func(fd uintptr) { fds = append(fds, int32(fd)) }); err != nil {
			return nil
		}
	}
	ring, err := newMsgRing(fds)
	if err != nil {
		return nil
	}
	return ring
}

// read is the epoll file's RawConn.Read callback: it reads one batch
// from the ready sockets, and returns false to wait when none is.
func (s *socketSet) read(epfd uintptr) bool {
	if s.ring != nil {
		return s.readRing(epfd)
	}
	for {
		if s.nready == 0 && !s.poll(epfd) {
			return false
		}
		if s.readOne() {
			return true
		}
	}
}

// readOne reads a batch from the first ready socket with recvmmsg(2). A
// socket that filled the batch goes to the back of the queue, for more;
// one that did not, or was empty, leaves it (false: empty).
func (s *socketSet) readOne() bool {
	i := s.ready[0]
	s.nready = copy(s.ready[:], s.ready[1:s.nready])
	s.got = false
	if err := s.rcs[i].Control(s.recv[i]); err != nil || !s.got {
		return false // closed under us, or empty
	}
	r := s.r
	if r.errno == 0 && r.got == r.want {
		s.ready[s.nready] = i
		s.nready++
	}
	for k := range r.got {
		r.slotPort[k] = s.ports[i]
	}
	return true
}

// poll asks epoll which sockets are readable and queues them, the
// canonical one last; false when none is.
func (s *socketSet) poll(epfd uintptr) bool {
	for {
		n, err := unix.EpollWait(int(epfd), s.events[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
		s.nready = 0
		canonical := false
		for _, ev := range s.events[:n] {
			if ev.Fd == 0 {
				canonical = true
				continue
			}
			s.ready[s.nready] = ev.Fd
			s.nready++
		}
		if canonical {
			s.ready[s.nready] = 0
			s.nready++
		}
		return true
	}
}

// readRing reads one batch through the ring: the first sockets of the
// ready queue, up to one per slot, each given an equal share of the
// slots (the canonical socket, when among them, the last share).
func (s *socketSet) readRing(epfd uintptr) bool {
	s.ringMu.Lock()
	defer s.ringMu.Unlock()
	r := s.r
	if s.ring == nil { // closed: readBatch sees it
		r.got, r.errno = 0, 0
		return true
	}
	for {
		if s.nready == 0 && !s.poll(epfd) {
			return false
		}
		if s.nready == 1 || r.want == 1 {
			// One socket: recvmmsg costs less than a ring read per slot.
			if s.readOne() {
				return true
			}
			continue
		}
		take := min(s.nready, r.want)
		share, extra := r.want/take, r.want%take
		n := 0
		for j, i := range s.ready[:take] {
			k := share
			if j < extra {
				k++
			}
			for range k {
				s.sock[n] = uint16(i)
				n++
			}
		}
		if err := s.ring.recvmsgs(r.hdrs[:n], s.sock[:n], s.res[:n]); err != nil {
			// The ring failed as a whole (the kernel refused the call):
			// read without it from now on, as where there is none.
			s.ring.close()
			s.ring = nil
			return s.read(epfd)
		}
		filled, kept := 0, 0
		var failed syscall.Errno
		for slot := 0; slot < n; {
			i := s.sock[slot]
			full := true
			for ; slot < n && s.sock[slot] == i; slot++ {
				res := s.res[slot]
				r.empty[slot] = res < 0
				if res < 0 {
					full = false
					if res != -int32(unix.EAGAIN) && failed == 0 {
						failed = syscall.Errno(-res)
					}
					continue
				}
				r.hdrs[slot].Len = uint32(res)
				r.slotPort[slot] = s.ports[i]
				filled++
			}
			if full {
				s.kept[kept] = int32(i)
				kept++
			}
		}
		// The sockets not served yet come next, then those with more.
		rest := copy(s.ready[:], s.ready[take:s.nready])
		s.nready = rest + copy(s.ready[rest:], s.kept[:kept])
		if filled == 0 && failed == 0 {
			continue
		}
		r.got, r.errno, r.holes = n, 0, filled < n
		if filled == 0 {
			r.got, r.errno = 0, failed
		}
		return true
	}
}

func (s *socketSet) close() error {
	s.ringMu.Lock()
	if s.ring != nil {
		s.ring.close() // first: it holds the sockets open
		s.ring = nil
	}
	s.ringMu.Unlock()
	if err := s.ep.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
