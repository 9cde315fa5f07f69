package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	labns "github.com/flowspread/flowspread/internal/netns"
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
	ns     labns.Namespace
	handle netns.NsHandle
}

// NewNetns creates a fresh named network namespace with its loopback up.
// The name starts with "fs-" and a random suffix, so parallel tests and
// leftovers of a killed run never collide.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	SkipUnlessRoot(t)
	ns, err := labns.Add("fs-" + labns.RandomID())
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromName(string(ns))
	if err != nil {
		ns.Delete()
		t.Fatalf("open namespace %s: %v", ns, err)
	}
	n := &Netns{Name: string(ns), ns: ns, handle: h}
	t.Cleanup(func() {
		h.Close()
		if err := ns.Delete(); err != nil {
			t.Error(err)
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
	out, err := n.ns.Command(args...).CombinedOutput()
	return string(out), err
}

// Command returns an unstarted command that runs inside the namespace,
// for programs a test keeps running in the background.
func (n *Netns) Command(args ...string) *exec.Cmd { return n.ns.Command(args...) }

// Namespace is n for code outside tests, which takes a labns.Namespace.
func (n *Netns) Namespace() labns.Namespace { return n.ns }

// Veth connects namespaces a and b with a veth pair named aName (in a) and
// bName (in b), both up. Deleting either namespace removes the pair.
func Veth(t testing.TB, a *Netns, aName string, b *Netns, bName string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.Run(t, "ip", "link", "set", aName, "up")
	b.Run(t, "ip", "link", "set", bName, "up")
}
