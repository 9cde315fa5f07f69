package main

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flowspread/flowspread/internal/testutil"
)

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

// startCommand runs flowtun in ns until the test ends, and waits until it
// says it is up.
func startCommand(t *testing.T, ns *testutil.Netns, bin string, args ...string) *testutil.Process {
	t.Helper()
	return testutil.StartProcess(t, ns, " up, MTU ", append([]string{bin}, args...)...)
}

// sites is the testbed's addressing: each end host has its own address
// on its loopback inside its site's /48, which a router routes to it, and
// a /64 of the site to spread over.
//
//	client lo 2001:db8:a::1 ── r0 router r1 ── server lo 2001:db8:b::1
//	       spread 2001:db8:a:1::/64           spread 2001:db8:b:1::/64
type sites struct {
	client, router, server *testutil.Netns
}

func newSites(t *testing.T) *sites {
	t.Helper()
	s := &sites{client: testutil.NewNetns(t), router: testutil.NewNetns(t), server: testutil.NewNetns(t)}
	testutil.Veth(t, s.client, "c0", s.router, "r0")
	testutil.Veth(t, s.router, "r1", s.server, "s0")
	s.router.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	s.router.Run(t, "ip", "addr", "add", "2001:db8:ff:1::1/64", "dev", "r0", "nodad")
	s.router.Run(t, "ip", "addr", "add", "2001:db8:ff:2::1/64", "dev", "r1", "nodad")
	s.router.Run(t, "ip", "-6", "route", "add", "2001:db8:a::/48", "via", "2001:db8:ff:1::2")
	s.router.Run(t, "ip", "-6", "route", "add", "2001:db8:b::/48", "via", "2001:db8:ff:2::2")
	for _, h := range []struct {
		ns             *testutil.Netns
		dev, host, lnk string
		gw             string
	}{
		{s.client, "c0", "2001:db8:a::1", "2001:db8:ff:1::2", "2001:db8:ff:1::1"},
		{s.server, "s0", "2001:db8:b::1", "2001:db8:ff:2::2", "2001:db8:ff:2::1"},
	} {
		// nodad: even on lo a new address is tentative until the DAD
		// work has run, and a route cannot take it as its source before.
		h.ns.Run(t, "ip", "addr", "add", h.host+"/128", "dev", "lo", "nodad")
		h.ns.Run(t, "ip", "addr", "add", h.lnk+"/64", "dev", h.dev, "nodad")
		h.ns.Run(t, "ip", "-6", "route", "add", "default", "via", h.gw, "dev", h.dev, "src", h.host)
	}
	return s
}

// TestCommand runs the flowtun command at both ends of a routed path, with
// the command lines a testbed uses (spread both, and off for one outer
// flow), carries TCP through it, asks for counters with SIGUSR1, and stops
// it with SIGTERM: it must exit cleanly, write its final counters and
// leave neither the TUN device nor the local route.
func TestCommand(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	bin := buildFlowtun(t)
	for _, spread := range []string{"both", "off"} {
		t.Run(spread, func(t *testing.T) { testCommand(t, bin, spread) })
	}
}

func testCommand(t *testing.T, bin, spread string) {
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	if err := os.WriteFile(pskFile, []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	statsA, statsB := filepath.Join(dir, "client.json"), filepath.Join(dir, "server.json")
	s := newSites(t)
	procA := startCommand(t, s.client, bin,
		"-name", "ft0", "-listen-port", "51820", "-peer", "[2001:db8:b::1]:51820",
		"-prefix", "2001:db8:a:1::/64", "-peer-prefix", "2001:db8:b:1::/64", "-spread", spread,
		"-psk-file", pskFile, "-addr", "2001:db8:e::a/64,198.51.100.1/32", "-route", "198.51.100.0/24",
		"-stats", statsA)
	procB := startCommand(t, s.server, bin,
		"-name", "ft0", "-listen-port", "51820", "-peer", "[2001:db8:a::1]:51820",
		"-prefix", "2001:db8:b:1::/64", "-peer-prefix", "2001:db8:a:1::/64", "-spread", spread,
		"-psk-file", pskFile, "-addr", "2001:db8:e::b/64", "-addr", "198.51.100.2/32", "-route", "198.51.100.0/24",
		"-stats", statsB)

	echo := netip.MustParseAddrPort("[2001:db8:e::b]:7000")
	tcpEchoServer(t, s.server, echo)
	tcpEchoServer(t, s.server, netip.MustParseAddrPort("198.51.100.2:7000"))
	if err := tcpEcho(s.client, echo, 300<<10); err != nil {
		t.Fatalf("TCP over IPv6: %v\nclient: %s\nserver: %s", err, procA.Out, procB.Out)
	}
	if err := tcpEcho(s.client, netip.MustParseAddrPort("198.51.100.2:7000"), 300<<10); err != nil {
		t.Fatalf("TCP over IPv4: %v\nclient: %s\nserver: %s", err, procA.Out, procB.Out)
	}

	readStats := func(path string) (Stats, error) {
		var st Stats
		b, err := os.ReadFile(path)
		if err != nil {
			return st, err
		}
		return st, json.Unmarshal(b, &st)
	}
	// SIGUSR1: counters while running.
	if err := procA.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var running Stats
	testutil.WaitFor(t, "the client's counters after SIGUSR1", func() bool {
		var err error
		running, err = readStats(statsA)
		return err == nil
	})
	if running.TunPackets == 0 || running.Delivered == 0 {
		t.Errorf("the client's counters on SIGUSR1 show no traffic: %+v", running)
	}
	// Two TCP flows and whatever the TUN devices send themselves.
	if spread == "both" && running.AddressesUsed < 2 {
		t.Errorf("spreading, the client sent from %d outer addresses", running.AddressesUsed)
	}
	if spread == "off" && (running.AddressesUsed != 0 || running.Conn.SentUnspread != running.Conn.Sent) {
		t.Errorf("not spreading, the client sent %d of %d datagrams spread", running.Conn.Sent-running.Conn.SentUnspread, running.Conn.Sent)
	}

	// SIGTERM: a clean exit.
	final := map[string]Stats{}
	for _, c := range []struct {
		name  string
		p     *testutil.Process
		ns    *testutil.Netns
		stats string
	}{{"client", procA, s.client, statsA}, {"server", procB, s.server, statsB}} {
		if err := c.p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-c.p.Exited()
		if c.p.Err() != nil {
			t.Errorf("%s exited with %v: %s", c.name, c.p.Err(), c.p.Out)
		}
		s, err := readStats(c.stats)
		if err != nil {
			t.Errorf("%s's final counters: %v", c.name, err)
		} else if s.Delivered == 0 || s.DroppedAuth+s.DroppedMalformed != 0 {
			t.Errorf("%s's final counters: %+v", c.name, s)
		}
		final[c.name] = s
		if out, err := c.ns.Output("ip", "link", "show", "ft0"); err == nil {
			t.Errorf("%s: ft0 is still there after exit: %s", c.name, out)
		}
		routes := c.ns.Run(t, "ip", "-6", "route", "show", "table", "local")
		if strings.Contains(routes, "2001:db8:a:1::/64") || strings.Contains(routes, "2001:db8:b:1::/64") {
			t.Errorf("%s: the local route is still there after exit:\n%s", c.name, routes)
		}
	}
	// Probe copies duplicate datagrams sent on the canonical pair: the
	// replay window drops the second of each, and nothing else repeats.
	for _, p := range [][2]string{{"client", "server"}, {"server", "client"}} {
		if r, probes := final[p[0]].DroppedReplay, final[p[1]].Conn.SentProbes; r > probes {
			t.Errorf("the %s dropped %d replays, but the %s sent only %d probe copies", p[0], r, p[1], probes)
		}
	}
	if running.TunPackets > 0 {
		t.Logf("client at SIGUSR1: %d packets from the TUN, %d delivered, %d outer addresses, %d GSO sends",
			running.TunPackets, running.Delivered, running.AddressesUsed, running.Conn.GSOSends)
	}
}

// TestCommandChecksSelf runs flowtun with -self given as an operator
// might get it wrong: a command copied from the peer (so -self is the
// peer's address), a port that is not ours. Each must be refused at
// start with a message that says what is wrong, before a key is used;
// our own address, an address of an AnyIP local route, and -nat start.
func TestCommandChecksSelf(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	bin := buildFlowtun(t)
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	if err := os.WriteFile(pskFile, []byte(testPSKHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newTwoHosts(t)
	h.a.Run(t, "ip", "-6", "route", "add", "local", "2001:db8:c::/64", "dev", "lo")
	ap := func(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }
	// A's command: us A, the peer B.
	commandA := func(self string, extra ...string) []string {
		return append([]string{"-name", "ft0", "-listen-port", "51820", "-peer", ap(linkB, tunPort),
			"-self", self, "-psk-file", pskFile, "-stats", ""}, extra...)
	}
	for _, tc := range []struct {
		name    string
		ns      *testutil.Netns
		args    []string
		wantErr string // "": it must start
	}{
		{"our address", h.a, commandA(ap(linkA, tunPort)), ""},
		{"A's command copied to B", h.b, commandA(ap(linkA, tunPort)),
			"-self 2001:db8:ff::a is not an address of this host: did you swap -self and -peer, or copy the peer's command?"},
		{"swapped", h.a, []string{"-name", "ft0", "-listen-port", "51820", "-peer", ap(linkA, tunPort), "-self", ap(linkB, tunPort), "-psk-file", pskFile},
			"-self 2001:db8:ff::b is not an address of this host: did you swap -self and -peer"},
		{"another port", h.a, commandA(ap(linkA, 51821)), "-self [2001:db8:ff::a]:51821 has port 51821, but we listen on 51820"},
		{"an address in a local route", h.a, commandA(ap(netip.MustParseAddr("2001:db8:c::5"), tunPort)), ""},
		{"behind a NAT", h.b, commandA(ap(netip.MustParseAddr("2001:db8:ff::5"), tunPort), "-nat"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := tc.ns.Command(append([]string{bin}, tc.args...)...)
			var out testutil.LockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var err error
			up, done := false, false
			testutil.WaitFor(t, "flowtun to come up or exit", func() bool {
				select {
				case err = <-exited:
					done = true
					return true
				default:
					up = strings.Contains(out.String(), " up, MTU ")
					return up
				}
			})
			if up {
				cmd.Process.Signal(syscall.SIGTERM)
				if err := <-exited; err != nil {
					t.Errorf("exit after SIGTERM: %v: %s", err, out.String())
				}
			}
			switch {
			case tc.wantErr == "" && !up:
				t.Errorf("flowtun did not start: %v: %s", err, out.String())
			case tc.wantErr != "" && up:
				t.Errorf("flowtun started; want it refused with %q: %s", tc.wantErr, out.String())
			case tc.wantErr != "" && done:
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out.String(), tc.wantErr) {
					t.Errorf("exit %v, output %q; want status 1 and %q", err, out.String(), tc.wantErr)
				}
			}
		})
	}
}
