package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketCaps is what the kernel offered when the socket was opened.
type socketCaps struct {
	gso bool // UDP_SEGMENT
}

// openSocket opens the conn's UDP socket on [::]:cfg.Port, dual-stack,
// allowed to send from addresses that are not assigned to any interface:
// IPV6_FREEBIND (Linux 4.15; IP_FREEBIND, which sets the same flag, before
// that) or IPV6_TRANSPARENT. It probes UDP GSO.
func openSocket(cfg *Config) (*net.UDPConn, socketCaps, error) {
	var caps socketCaps
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var optErr error
		if err := rc.Control(func(fd uintptr) { optErr = setSendOptions(int(fd), cfg) }); err != nil {
			return err
		}
		return optErr
	}}
	laddr := netip.AddrPortFrom(netip.IPv6Unspecified(), cfg.Port)
	pc, err := lc.ListenPacket(context.Background(), "udp", laddr.String())
	if err != nil {
		var opt *sockoptError
		if errors.As(err, &opt) {
			return nil, caps, opt
		}
		return nil, caps, fmt.Errorf("conn: listen on %v: %w", laddr, unwrapOp(err))
	}
	uc := pc.(*net.UDPConn)
	if !cfg.DisableGSO {
		rc, err := uc.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) {
				// Kernels with UDP GSO (4.18+) know the option.
				_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
				caps.gso = err == nil
			})
		}
	}
	return uc, caps, nil
}

// sockoptError is a socket option that could not be set, with advice.
type sockoptError struct {
	msg string
	err error
}

func (e *sockoptError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *sockoptError) Unwrap() error { return e.err }

func setSendOptions(fd int, cfg *Config) error {
	if cfg.Transparent {
		err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		if errors.Is(err, unix.EPERM) {
			return &sockoptError{"conn: Transparent needs CAP_NET_ADMIN or CAP_NET_RAW: run as root, grant it with " +
				"setcap cap_net_admin+ep, or leave Transparent off (FREEBIND needs no capability)", err}
		}
		if err != nil {
			return &sockoptError{"conn: set IPV6_TRANSPARENT", err}
		}
	} else {
		err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		if errors.Is(err, unix.ENOPROTOOPT) {
			err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
		if err != nil {
			return &sockoptError{"conn: set IPV6_FREEBIND (needed to send from the prefix's addresses)", err}
		}
	}
	if cfg.FlowLabel {
		if err := unix.SetsockoptInt(fd, unix.SOL_IPV6, sockoptFlowinfoSend, 1); err != nil {
			return &sockoptError{"conn: set IPV6_FLOWINFO_SEND for FlowLabel", err}
		}
	}
	setSocketBuffers(fd)
	return nil
}

// socketBufferSize is what the socket asks for its send and receive
// buffers. A tunnel's bursts (sendmmsg batches, GRO runs of a bulk flow)
// overflow the default of about 200 KiB and the kernel drops whole runs,
// which the inner TCP sees as losses; wireguard-go asks for 7 MiB as well.
const socketBufferSize = 7 << 20

// setSocketBuffers enlarges the socket buffers, beyond net.core.rmem_max
// and wmem_max where the process has CAP_NET_ADMIN (the *BUFFORCE
// options), else up to those limits. Best effort: a small buffer costs
// throughput, not correctness.
func setSocketBuffers(fd int) {
	for _, opt := range [...]struct{ force, plain int }{
		{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF},
		{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF},
	} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt.force, socketBufferSize) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt.plain, socketBufferSize)
		}
	}
}
