package testutil

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// WithoutNetCaps runs fn on a thread of its own whose effective
// capabilities lack CAP_NET_ADMIN and CAP_NET_RAW, as an unprivileged
// program's would, and throws the thread away after. It skips t unless it
// runs as root. fn sees the test process's network namespace.
func WithoutNetCaps(t testing.TB, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop capabilities from: run the tests as root (CI does)")
	}
	done := make(chan error)
	go func() {
		// Never unlocked: the thread, with its reduced capabilities, exits
		// with the goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective &^= 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("drop capabilities: %v", err)
	}
}
