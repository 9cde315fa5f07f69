package conn

import (
	"errors"
	"fmt"
	"net"
	"os"
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
// The ready sockets are served in turn: each read takes one batch from
// the next ready socket, so a busy port cannot starve the others. The
// canonical socket (the first) is served last of each round: a probe
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

	events     [setEvents]unix.EpollEvent
	ready      [setEvents]int32 // socket indexes epoll said were readable
	head, tail int
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
	return s, nil
}

// read is the epoll file's RawConn.Read callback: it reads one batch
// from the next ready socket, and returns false to wait when none is.
func (s *socketSet) read(epfd uintptr) bool {
	for {
		if s.head == s.tail {
			n, err := unix.EpollWait(int(epfd), s.events[:], 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return false
			}
			s.head, s.tail = 0, 0
			canonical := false
			for _, ev := range s.events[:n] {
				if ev.Fd == 0 {
					canonical = true
					continue
				}
				s.ready[s.tail] = ev.Fd
				s.tail++
			}
			if canonical {
				s.ready[s.tail] = 0
				s.tail++
			}
		}
		i := s.ready[s.head]
		s.head++
		s.got = false
		if err := s.rcs[i].Control(s.recv[i]); err != nil || !s.got {
			continue // closed under us, or empty: the next one
		}
		s.r.localPort = s.ports[i]
		return true
	}
}

func (s *socketSet) close() error {
	if err := s.ep.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}
