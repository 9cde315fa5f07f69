package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/flowspread/flowspread/internal/testutil"
)

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// buildFlowtun builds the command into a temporary directory.
func buildFlowtun(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build flowtun")
	}
	bin := filepath.Join(t.TempDir(), "flowtun")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a flowtun command running in a namespace.
type process struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{} // closed once it exited; then err is its exit
	err    error
}

// startCommand runs flowtun in ns until the test ends, and waits until it
// says it is up.
func startCommand(t *testing.T, ns *testutil.Netns, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: ns.Command(append([]string{bin}, args...)...), out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill() // does nothing once it exited
		<-p.exited
	})
	waitFor(t, "flowtun in "+ns.Name+" to come up", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("flowtun in %s exited: %v: %s", ns.Name, p.err, p.out)
		default:
		}
		return strings.Contains(p.out.String(), " up, MTU ")
	})
	return p
}

// TestCommand runs the flowtun command in two namespaces with the command
// lines a testbed would use, carries TCP through it, asks for counters
// with SIGUSR1, and stops it with SIGTERM: it must exit cleanly, write its
// final counters and leave neither the TUN device nor the local route.
func TestCommand(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	bin := buildFlowtun(t)
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	if err := os.WriteFile(pskFile, []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	statsA, statsB := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	h := newTwoHosts(t)
	procA := startCommand(t, h.a, bin,
		"-name", "ft0", "-listen-port", "51820", "-peer", "[2001:db8:ff::b]:51820",
		"-prefix", "2001:db8:a::/64", "-peer-prefix", "2001:db8:b::/64", "-spread", "both",
		"-psk-file", pskFile, "-addr", "198.51.100.1/32,fd00:99::1/128", "-route", "198.51.100.0/24,fd00:99::/64",
		"-stats", statsA)
	procB := startCommand(t, h.b, bin,
		"-name", "ft0", "-listen-port", "51820", "-peer", "[2001:db8:ff::a]:51820",
		"-prefix", "2001:db8:b::/64", "-peer-prefix", "2001:db8:a::/64", "-spread", "both",
		"-psk-file", pskFile, "-addr", "198.51.100.2/32", "-addr", "fd00:99::2/128", "-route", "198.51.100.0/24",
		"-route", "fd00:99::/64", "-stats", statsB)

	echo := netip.MustParseAddrPort("[fd00:99::2]:7000")
	tcpEchoServer(t, h.b, echo)
	tcpEchoServer(t, h.b, netip.MustParseAddrPort("198.51.100.2:7000"))
	if err := tcpEcho(h.a, echo, 300<<10); err != nil {
		t.Fatalf("TCP over IPv6: %v\nA: %s\nB: %s", err, procA.out, procB.out)
	}
	if err := tcpEcho(h.a, netip.MustParseAddrPort("198.51.100.2:7000"), 300<<10); err != nil {
		t.Fatalf("TCP over IPv4: %v\nA: %s\nB: %s", err, procA.out, procB.out)
	}

	readStats := func(path string) (Stats, error) {
		var s Stats
		b, err := os.ReadFile(path)
		if err != nil {
			return s, err
		}
		return s, json.Unmarshal(b, &s)
	}
	// SIGUSR1: counters while running.
	if err := procA.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var running Stats
	waitFor(t, "A's counters after SIGUSR1", func() bool {
		var err error
		running, err = readStats(statsA)
		return err == nil
	})
	if running.TunPackets == 0 || running.Delivered == 0 || running.AddressesUsed == 0 {
		t.Errorf("A's counters on SIGUSR1 show no spread traffic: %+v", running)
	}

	// SIGTERM: a clean exit.
	for _, c := range []struct {
		name  string
		p     *process
		ns    *testutil.Netns
		stats string
	}{{"A", procA, h.a, statsA}, {"B", procB, h.b, statsB}} {
		if err := c.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-c.p.exited
		if c.p.err != nil {
			t.Errorf("%s exited with %v: %s", c.name, c.p.err, c.p.out)
		}
		s, err := readStats(c.stats)
		if err != nil {
			t.Errorf("%s's final counters: %v", c.name, err)
		} else if s.Delivered == 0 || s.DroppedAuth+s.DroppedReplay+s.DroppedMalformed != 0 {
			t.Errorf("%s's final counters: %+v", c.name, s)
		}
		if out, err := c.ns.Output("ip", "link", "show", "ft0"); err == nil {
			t.Errorf("%s: ft0 is still there after exit: %s", c.name, out)
		}
		routes := c.ns.Run(t, "ip", "-6", "route", "show", "table", "local")
		if strings.Contains(routes, "2001:db8:a::/64") || strings.Contains(routes, "2001:db8:b::/64") {
			t.Errorf("%s: the local route is still there after exit:\n%s", c.name, routes)
		}
	}
	if running.TunPackets > 0 {
		t.Logf("A at SIGUSR1: %d packets from the TUN, %d delivered, %d outer addresses, %d GSO sends",
			running.TunPackets, running.Delivered, running.AddressesUsed, running.Conn.GSOSends)
	}
}
