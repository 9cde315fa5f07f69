package conn

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn/internal/sockopt"
	"github.com/flowspread/flowspread/internal/testutil"
)

func TestSocketBuffersEnlarged(t *testing.T) {
	ns := testutil.NewNetns(t) // root: the *BUFFORCE options work
	var uc *net.UDPConn
	if err := ns.Do(func() (err error) {
		uc, _, err = openSocket(&Config{}, 0, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []struct {
		name string
		opt  int
	}{{"SO_RCVBUF", unix.SO_RCVBUF}, {"SO_SNDBUF", unix.SO_SNDBUF}} {
		var got int
		var gerr error
		rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt.opt) })
		if gerr != nil {
			t.Fatal(gerr)
		}
		// The kernel reports twice what was set (it counts its overhead).
		if got < sockopt.BufferSize {
			t.Errorf("%s is %d bytes, want at least %d", opt.name, got, sockopt.BufferSize)
		}
	}
}
