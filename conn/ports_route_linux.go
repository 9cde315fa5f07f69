package conn

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// portRoute connects the sockets of our port range to the conn's one
// peer, so that the kernel keeps the route (and the source address it
// picked) of each socket and does not look them up per datagram: an
// unconnected socket does, which cost mixed flows over 64 ports about 15%
// of their send rate. It connects only where nothing else changes:
//
//   - the port range's datagrams are steered to the canonical socket
//     (portSteer), so a connected socket filters no reply away;
//   - the conn has no address range, so no datagram asks for another
//     source address than the one connect picks;
//   - the conn has exactly one peer, whose canonical address the sockets
//     connect to. A datagram to another address of it still goes out,
//     through a fresh route lookup.
//
// Connecting fixes each socket's source address, so portRoute watches
// the kernel's address and route changes (rtnetlink) and connects again
// after each, as an unconnected socket would pick its source afresh: a
// laptop that moves to another network keeps its tunnel. A connected
// socket also takes the ICMP errors for its peer (port unreachable); the
// reader skips them, and a send they fail goes again.
type portRoute struct {
	c  *FlowSpreadConn
	mu sync.Mutex
	// want is the peer to connect to (invalid: none); peer is what the
	// sockets are connected to, invalid where connecting failed, as it
	// may while an address or route is half changed: the next change
	// tries again.
	want, peer netip.AddrPort
	nl         *os.File // rtnetlink: address and route changes
	done       chan struct{}
}

// newPortRoute starts watching address and route changes, or returns an
// error where rtnetlink cannot be opened (the conn then never connects).
func newPortRoute(c *FlowSpreadConn) (*portRoute, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket(AF_NETLINK)", err)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK,
		Groups: unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR | unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind(AF_NETLINK)", err)
	}
	r := &portRoute{c: c, nl: os.NewFile(uintptr(fd), "rtnetlink"), done: make(chan struct{})}
	go r.watch()
	return r, nil
}

// watch connects the sockets again after every batch of changes the
// kernel reports, until the netlink socket is closed.
func (r *portRoute) watch() {
	defer close(r.done)
	buf := make([]byte, 16<<10)
	for {
		if _, err := r.nl.Read(buf); err != nil && !errors.Is(err, syscall.ENOBUFS) {
			return // closed (ENOBUFS: changes were lost; connect again all the same)
		}
		r.mu.Lock()
		if r.want.IsValid() {
			r.connect(r.want)
		}
		r.mu.Unlock()
	}
}

// setPeers connects the sockets to the one peer of list, or disconnects
// them when there is not exactly one.
func (r *portRoute) setPeers(list []Peer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var want netip.AddrPort
	if len(list) == 1 {
		want = list[0].Addr
	}
	if want == r.want && want == r.peer {
		return
	}
	r.want = want
	if want.IsValid() {
		r.connect(want)
	} else {
		r.disconnect()
	}
}

// connect connects every port socket to peer; where one refuses, it
// disconnects them all: unconnected sockets send as well, only slower.
// The caller holds r.mu.
func (r *portRoute) connect(peer netip.AddrPort) {
	sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: peer.Addr().As16()} // v4-mapped for IPv4
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(peer.Port()>>8), byte(peer.Port())
	if r.each(&sa) != nil {
		r.disconnect()
		return
	}
	r.peer = peer
}

func (r *portRoute) disconnect() {
	r.each(&unix.RawSockaddrInet6{Family: unix.AF_UNSPEC})
	r.peer = netip.AddrPort{}
}

// each connects every port socket to sa and returns the first error.
func (r *portRoute) each(sa *unix.RawSockaddrInet6) error {
	var first error
	for _, rc := range r.c.portRC {
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = unix.Syscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6)
		}); err != nil && first == nil {
			first = err
		}
		if errno != 0 && first == nil {
			first = os.NewSyscallError("connect", errno)
		}
	}
	return first
}

// close stops watching; the sockets close with the conn.
func (r *portRoute) close() {
	r.nl.Close()
	<-r.done
}

// connected reports the peer the sockets are connected to, for tests.
func (r *portRoute) connected() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.peer
}
