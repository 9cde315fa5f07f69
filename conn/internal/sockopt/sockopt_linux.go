package sockopt

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// flowinfoSend is IPV6_FLOWINFO_SEND from linux/in6.h: take the flow
// label from the destination's sin6_flowinfo.
const flowinfoSend = 33

// SetSend sets on fd, an IPv6 UDP socket, what sending from many
// addresses of a prefix needs: IPV6_FREEBIND (IP_FREEBIND, which sets the
// same flag, before Linux 4.15) or IPV6_TRANSPARENT, IPV6_FLOWINFO_SEND
// when o.FlowLabel, and large buffers. It probes UDP GSO without turning
// it on (GSO is asked for per datagram). An error is an [*Error]: the
// socket cannot send as asked.
func SetSend(fd int, o SendOptions) (SendCaps, error) {
	var c SendCaps
	// Kernels with UDP GSO (4.18+) know the option. Probed first, as the
	// buffers, so that a diagnosis sees them even when an option below
	// is refused.
	_, c.GSOErr = unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
	c.Buffers = SetBuffers(fd)
	if o.Transparent {
		err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		if errors.Is(err, unix.EPERM) {
			return c, &Error{"IPV6_TRANSPARENT", "Transparent needs CAP_NET_ADMIN or CAP_NET_RAW: run as root, grant it with " +
				"setcap cap_net_admin+ep, or leave Transparent off (FREEBIND needs no capability)", err}
		}
		if err != nil {
			return c, &Error{"IPV6_TRANSPARENT", "", err}
		}
		c.Source = Transparent
	} else {
		c.Source = Freebind
		err := unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		if errors.Is(err, unix.ENOPROTOOPT) {
			c.Source = FreebindIPv4Option
			err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
		if err != nil {
			c.Source = NoSource
			return c, &Error{"IPV6_FREEBIND", "needed to send from the prefix's addresses", err}
		}
	}
	if o.FlowLabel {
		if err := unix.SetsockoptInt(fd, unix.SOL_IPV6, flowinfoSend, 1); err != nil {
			return c, &Error{"IPV6_FLOWINFO_SEND", "needed for FlowLabel", err}
		}
	}
	return c, nil
}

// SetRecv sets on fd, an IPv6 UDP socket, what receiving on many
// addresses needs: IPV6_RECVPKTINFO (which address a datagram was sent
// to) and IPV6_RECVTCLASS (its ECN), IP_RECVTOS for IPv4 peers of a
// dual-stack socket, and UDP_GRO when gro. It probes recvmmsg(2). An
// error is an [*Error]: the socket cannot receive as a FlowSpreadConn
// needs.
func SetRecv(fd int, gro bool) (RecvCaps, error) {
	c := RecvCaps{GROErr: ErrNotAsked}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
		return c, &Error{"IPV6_RECVPKTINFO", "needed to learn which address of the prefix a datagram was sent to", err}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1); err != nil {
		return c, &Error{"IPV6_RECVTCLASS", "needed for the outer ECN", err}
	}
	// IPv4 datagrams on a dual-stack socket carry their ECN as IP_TOS. A
	// v6-only socket refuses the option and never sees IPv4.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
	if gro {
		c.GROErr = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}
	c.BatchErr = probeRecvmmsg(fd)
	return c, nil
}

// probeRecvmmsg asks the socket for one datagram with MSG_PEEK, which
// leaves it queued: it only tells whether the kernel knows recvmmsg(2)
// (ENOSYS under some sandboxes and emulators).
func probeRecvmmsg(fd int) error {
	var h [1]unix.Mmsghdr
	_, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&h[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno == unix.ENOSYS {
		return errno
	}
	return nil
}

// SetBuffers asks for [BufferSize] send and receive buffers on fd, beyond
// net.core.rmem_max and wmem_max where the process has CAP_NET_ADMIN (the
// *BUFFORCE options), else up to those limits, and returns what the
// kernel granted. Best effort: a small buffer costs throughput, not
// correctness.
func SetBuffers(fd int) Buffers {
	var b Buffers
	for _, opt := range [...]struct {
		force, plain int
		got          *int
	}{
		{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, &b.Recv},
		{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, &b.Send},
	} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt.force, BufferSize) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt.plain, BufferSize)
		}
		// The kernel reports twice what it granted (it counts its
		// overhead).
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt.plain); err == nil {
			*opt.got = v / 2
		}
	}
	return b
}
