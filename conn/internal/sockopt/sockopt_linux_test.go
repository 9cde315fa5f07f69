package sockopt

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

func udpSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func intOpt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSetSend checks that SetSend sets the options it reports, reading
// them back from the socket.
func TestSetSend(t *testing.T) {
	testutil.SkipUnlessRoot(t) // the *BUFFORCE options
	for _, tt := range []struct {
		name string
		o    SendOptions
		want Source
	}{
		{"freebind", SendOptions{}, Freebind},
		{"transparent", SendOptions{Transparent: true}, Transparent},
		{"flow-label", SendOptions{FlowLabel: true}, Freebind},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fd := udpSocket(t)
			c, err := SetSend(fd, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if c.Source != tt.want {
				t.Errorf("Source %v, want %v", c.Source, tt.want)
			}
			opt := unix.IPV6_FREEBIND
			if tt.o.Transparent {
				opt = unix.IPV6_TRANSPARENT
			}
			if intOpt(t, fd, unix.SOL_IPV6, opt) != 1 {
				t.Errorf("%v is not set on the socket", c.Source)
			}
			if got := intOpt(t, fd, unix.SOL_IPV6, flowinfoSend); (got == 1) != tt.o.FlowLabel {
				t.Errorf("IPV6_FLOWINFO_SEND is %d with FlowLabel %v", got, tt.o.FlowLabel)
			}
			if c.Buffers.Recv < BufferSize || c.Buffers.Send < BufferSize {
				t.Errorf("buffers %+v, want at least %d each", c.Buffers, BufferSize)
			}
			if got := intOpt(t, fd, unix.SOL_SOCKET, unix.SO_RCVBUF) / 2; got != c.Buffers.Recv {
				t.Errorf("reported a %d byte receive buffer; the socket has %d", c.Buffers.Recv, got)
			}
			// GSO is asked for per datagram: the probe must not set a
			// segment size on the socket.
			if seg, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT); (err == nil) != (c.GSOErr == nil) || seg != 0 {
				t.Errorf("UDP_SEGMENT is %d, %v; GSOErr %v", seg, err, c.GSOErr)
			}
		})
	}
}

func TestSetRecv(t *testing.T) {
	for _, gro := range []bool{false, true} {
		fd := udpSocket(t)
		c, err := SetRecv(fd, gro)
		if err != nil {
			t.Fatal(err)
		}
		if intOpt(t, fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO) != 1 || intOpt(t, fd, unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS) != 1 {
			t.Error("IPV6_RECVPKTINFO or IPV6_RECVTCLASS is not set")
		}
		if !gro && !errors.Is(c.GROErr, ErrNotAsked) {
			t.Errorf("GRO not asked for; GROErr %v", c.GROErr)
		}
		if gro && c.GROErr == nil && intOpt(t, fd, unix.IPPROTO_UDP, unix.UDP_GRO) != 1 {
			t.Error("GRO reported on but UDP_GRO is not set")
		}
		if c.BatchErr != nil {
			t.Errorf("recvmmsg(2) reported missing: %v", c.BatchErr)
		}
	}
}

// TestSetSendWithoutCapabilities checks what SetSend says where
// IPV6_TRANSPARENT is refused, and that the buffers it reports are what
// the kernel's limits allow.
func TestSetSendWithoutCapabilities(t *testing.T) {
	fd := udpSocket(t)
	var c SendCaps
	var err error
	testutil.WithoutNetCaps(t, func() { c, err = SetSend(fd, SendOptions{Transparent: true}) })
	var opt *Error
	if !errors.As(err, &opt) || opt.Option != "IPV6_TRANSPARENT" || !errors.Is(err, unix.EPERM) ||
		!strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("error %v; want an *Error for IPV6_TRANSPARENT wrapping EPERM that names CAP_NET_ADMIN", err)
	}
	if c.Source != NoSource {
		t.Errorf("Source %v after a refusal", c.Source)
	}
	b, rerr := os.ReadFile("/proc/sys/net/core/rmem_max")
	limit, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if rerr != nil || limit >= BufferSize {
		return
	}
	if c.Buffers.Recv > limit || c.Buffers.Recv < limit/2 {
		t.Errorf("receive buffer %d without CAP_NET_ADMIN; want net.core.rmem_max, %d", c.Buffers.Recv, limit)
	}
}
