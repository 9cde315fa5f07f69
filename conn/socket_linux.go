package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

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
// its probe socket too.
func openSocket(cfg *Config, port uint16) (*net.UDPConn, socketCaps, error) {
	var caps socketCaps
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var optErr error
		if err := rc.Control(func(fd uintptr) {
			var sc sockopt.SendCaps
			sc, optErr = sockopt.SetSend(int(fd), sockopt.SendOptions{Transparent: cfg.Transparent, FlowLabel: cfg.FlowLabel})
			caps.gso = !cfg.DisableGSO && sc.GSOErr == nil
		}); err != nil {
			return err
		}
		return optErr
	}}
	laddr := netip.AddrPortFrom(netip.IPv6Unspecified(), port)
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
		uc, _, err := openSocket(cfg, pr.Port(i))
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
	c.ring = ring
}
