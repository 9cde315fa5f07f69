package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn/internal/sockopt"
)

// socketCaps is what the kernel offered when the socket was opened.
type socketCaps struct {
	gso bool // UDP_SEGMENT
}

// openSocket opens the conn's UDP socket on [::]:cfg.Port, dual-stack,
// allowed to send from addresses that are not assigned to any interface
// (IPV6_FREEBIND or IPV6_TRANSPARENT), with large buffers. It probes UDP
// GSO. The options are [sockopt.SetSend]'s, which host.Diagnose sets on
// its probe socket too. With shared, the port stays open to the ECN
// sockets (openECNSockets) or the port steering's decoy (portSteer)
// until unshare.
func openSocket(cfg *Config, port uint16, shared bool) (*net.UDPConn, socketCaps, error) {
	laddr := netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	if shared {
		// With SO_REUSEPORT the bind would join a socket that another
		// program of this user holds on the port with SO_REUSEPORT, and
		// share its datagrams. Claim the port alone first, so that a
		// port in use fails as without sharing, and to learn the free
		// port that Port 0 asks for.
		probe, err := net.ListenPacket("udp", laddr.String())
		if err != nil {
			return nil, socketCaps{}, fmt.Errorf("conn: listen on %v: %w", laddr, unwrapOp(err))
		}
		laddr = netip.AddrPortFrom(laddr.Addr(), uint16(probe.LocalAddr().(*net.UDPAddr).Port))
		probe.Close()
	}
	return openSocketAt(cfg, laddr, shared, 0)
}

// openSocketAt opens a socket as openSocket does, bound to laddr, with
// IPV6_TCLASS set to tclass when it is not 0.
func openSocketAt(cfg *Config, laddr netip.AddrPort, shared bool, tclass int) (*net.UDPConn, socketCaps, error) {
	var caps socketCaps
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var optErr error
		if err := rc.Control(func(fd uintptr) {
			var sc sockopt.SendCaps
			sc, optErr = sockopt.SetSend(int(fd), sockopt.SendOptions{Transparent: cfg.Transparent, FlowLabel: cfg.FlowLabel})
			caps.gso = !cfg.DisableGSO && sc.GSOErr == nil
			if optErr == nil && shared {
				optErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if optErr == nil && tclass != 0 {
				optErr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TCLASS, tclass)
			}
		}); err != nil {
			return err
		}
		return optErr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", laddr.String())
	if err != nil {
		var opt *sockopt.Error
		if errors.As(err, &opt) {
			return nil, caps, fmt.Errorf("conn: %w", opt)
		}
		return nil, caps, fmt.Errorf("conn: listen on %v: %w", laddr, unwrapOp(err))
	}
	return pc.(*net.UDPConn), caps, nil
}

// openPortSockets opens a socket, as openSocket does, on each port of
// cfg.Range.Ports: a datagram's source port is its socket's, so each
// source port needs its own. None without a port range.
func openPortSockets(cfg *Config) ([]*net.UDPConn, error) {
	pr := cfg.Range.Ports
	conns := make([]*net.UDPConn, 0, pr.Len())
	for i := range pr.Len() {
		uc, _, err := openSocket(cfg, pr.Port(i), false)
		if err != nil {
			closeAll(conns)
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("conn: port %d of Range.Ports %d-%d is in use: choose a range no other socket holds: %w", pr.Port(i), pr.First, int(pr.First)+pr.Len()-1, err)
			}
			return nil, err
		}
		conns = append(conns, uc)
	}
	return conns, nil
}

// openRing sets up the io_uring that sends a batch from several of the
// port range's sockets at once, with the sockets registered. It
// leaves c.ring nil where the kernel has no io_uring: batches then take
// a sendmmsg(2) per socket.
func (c *FlowSpreadConn) openRing() {
	fds := make([]int32, 0, 1+len(c.portRC))
	for _, rc := range append([]syscall.RawConn{c.rc}, c.portRC...) {
		if err := rc.Control(func(fd uintptr) { fds = append(fds, int32(fd)) }); err != nil {
			return
		}
	}
	ring, err := newMsgRing(fds)
	if err != nil {
		return
	}
	c.ring, c.portTClass = ring, true
}

// ecnBindAddr is where the ECN sockets are bound: an address of the
// discard-only prefix 100::/64 (RFC 6666), to which no datagram comes, so
// that they never take one meant for the canonical socket. They send
// only with IPV6_PKTINFO, which sets the source.
var ecnBindAddr = netip.MustParseAddr("100::1")

// openECNSockets opens, for each of ecnSocketCodepoints, a socket on our
// port that marks every datagram with that codepoint (IPV6_TCLASS), and
// unshares them. The canonical socket uc must have been opened shared;
// Listen unshares it.
//
// Why: a spread datagram carries its source address as IPV6_PKTINFO, 36
// bytes of control message, and the kernel copies up to 36 bytes of
// them on its stack but allocates for more (____sys_sendmsg in
// net/socket.c), so an IPV6_TCLASS message beside it costs an allocation
// and a free per datagram. From these sockets an ECN-capable flow's
// datagrams need the PKTINFO alone.
//
// It returns no sockets where the kernel refuses any of this; sends then
// carry the two messages, as before.
func openECNSockets(cfg *Config, uc *net.UDPConn) []*net.UDPConn {
	port := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
	var conns []*net.UDPConn
	for _, e := range ecnSocketCodepoints {
		ec, _, err := openSocketAt(cfg, netip.AddrPortFrom(ecnBindAddr, port), true, int(e))
		if err != nil {
			closeAll(conns)
			conns = nil
			break
		}
		conns = append(conns, ec)
	}
	for _, c := range conns {
		if err := unshare(c); err != nil {
			closeAll(conns)
			return nil
		}
	}
	return conns
}

// unshare clears SO_REUSEPORT on a bound socket: a later bind of its
// address and port fails with EADDRINUSE, as for a socket that never
// shared, and the kernel's lookup no longer spreads datagrams over the
// reuseport group.
func unshare(uc *net.UDPConn) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var optErr error
	if err := rc.Control(func(fd uintptr) {
		optErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 0)
	}); err != nil {
		return err
	}
	return optErr
}
