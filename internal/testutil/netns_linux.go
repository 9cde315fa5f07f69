package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// SkipUnlessRoot skips t unless it runs as root with the ip command at
// hand, which every namespace test needs.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces: run the tests as root (CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command from iproute2: apt-get install iproute2")
	}
}

// Netns is a network namespace made for one test. It is deleted when the
// test ends, whether it passed or not.
type Netns struct {
	Name   string
	handle netns.NsHandle
}

// NewNetns creates a fresh named network namespace with its loopback up.
// The name starts with "fs-" and a random suffix, so parallel tests and
// leftovers of a killed run never collide.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	SkipUnlessRoot(t)
	var b [4]byte
	rand.Read(b[:])
	name := "fs-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open namespace %s: %v", name, err)
	}
	n := &Netns{Name: name, handle: h}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Do runs fn on an OS thread switched into the namespace. Sockets and
// netlink handles that fn opens stay in the namespace after Do returns, so
// the usual pattern is to open them inside Do and use them outside.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never switched back: it exits with the goroutine,
		// because it is still locked when the goroutine returns.
		runtime.LockOSThread()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Run runs a command inside the namespace and fails t if it fails.
// It returns the command's combined output.
func (n *Netns) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Output(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output runs a command inside the namespace and returns its combined
// output and error.
func (n *Netns) Output(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Command returns an unstarted command that runs inside the namespace,
// for programs a test keeps running in the background.
func (n *Netns) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Veth connects namespaces a and b with a veth pair named aName (in a) and
// bName (in b), both up. Deleting either namespace removes the pair.
func Veth(t testing.TB, a *Netns, aName string, b *Netns, bName string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(t, "ip", "link", "set", aName, "up")
	b.Run(t, "ip", "link", "set", bName, "up")
}
