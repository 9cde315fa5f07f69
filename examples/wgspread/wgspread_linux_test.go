package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

// The end-to-end topology: two namespaces joined by a veth, a wgspread
// interface in each, configured with the wg tool.
//
//	A  va 2001:db8:ff::1 ──── 2001:db8:ff::2 vb  B
//	   prefix 2001:db8:a::/64   prefix 2001:db8:b::/64
//	   inner 10.0.0.1/24        inner 10.0.0.2/24
//
// Each end's canonical endpoint is its veth address and listen port.
var (
	e2ePrefixA = netip.MustParsePrefix("2001:db8:a::/64")
	e2ePrefixB = netip.MustParsePrefix("2001:db8:b::/64")
	e2eLinkA   = netip.MustParseAddrPort("[2001:db8:ff::1]:51820")
	e2eLinkB   = netip.MustParseAddrPort("[2001:db8:ff::2]:51821")
	e2eInnerA  = netip.MustParseAddr("10.0.0.1")
	e2eInnerB  = netip.MustParseAddr("10.0.0.2")
)

// buildWgspread builds the command into a temporary directory.
func buildWgspread(t testing.TB) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go command to build wgspread")
	}
	bin := filepath.Join(t.TempDir(), "wgspread")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startWgspread runs wgspread in ns until the test ends and waits until
// its UAPI socket is ready. At the end of the test it gets SIGTERM first,
// so it removes its socket from the shared /var/run/wireguard.
func startWgspread(t testing.TB, ns *testutil.Netns, bin string, args ...string) *testutil.Process {
	t.Helper()
	return testutil.StartProcess(t, ns, " ready: ", append([]string{bin}, args...)...)
}

// wgKeyPair makes a key pair with wg genkey and wg pubkey, and writes the
// private key to a file for wg set.
func wgKeyPair(t testing.TB, dir, name string) (privateKey, publicKey, file string) {
	t.Helper()
	priv, err := exec.Command("wg", "genkey").Output()
	if err != nil {
		t.Fatalf("wg genkey: %v", err)
	}
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = bytes.NewReader(priv)
	pub, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v", err)
	}
	file = filepath.Join(dir, name)
	if err := os.WriteFile(file, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(priv)), strings.TrimSpace(string(pub)), file
}

// endpoints returns wg show IFACE endpoints: public key to endpoint.
func endpoints(t testing.TB, ns *testutil.Netns, iface string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for line := range strings.Lines(ns.Run(t, "wg", "show", iface, "endpoints")) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "\t"); ok {
			m[k] = v
		}
	}
	return m
}

// checkEndpoint fails t unless wg reports want as peer's endpoint.
func checkEndpoint(t *testing.T, when string, ns *testutil.Netns, iface, peer string, want netip.AddrPort) {
	t.Helper()
	if got := endpoints(t, ns, iface)[peer]; got != want.String() {
		t.Errorf("%s: wg show %s endpoints says %q for the peer, want its canonical endpoint %v", when, iface, got, want)
	}
}

// TestWithWgTool runs wgspread at both ends, configures them with the wg
// tool (wg set at A, wg setconf at B) and checks that the tunnel carries
// ping, TCP and UDP both ways; that 64 inner UDP flows appear as many outer
// address pairs on the wire; that wg keeps reporting each peer's canonical
// endpoint; that a handshake after a key rotation works; and that both
// ends shut down cleanly, by SIGTERM and by deleting the interface.
func TestWithWgTool(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	if _, err := exec.LookPath("wg"); err != nil {
		t.Skip("needs the wg command: apt-get install wireguard-tools (scripts/install-deps)")
	}
	if _, err := exec.LookPath("ping"); err != nil {
		t.Skip("needs the ping command: apt-get install iputils-ping")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for the TUN devices: %v", err)
	}
	bin := buildWgspread(t)
	tun := newWgTunnel(t, bin)
	nsA, nsB, ifA, ifB, procA, procB := tun.nsA, tun.nsB, tun.ifA, tun.ifB, tun.procA, tun.procB
	pubA, pubB, dir := tun.pubA, tun.pubB, tun.dir
	logs := tun.logs
	checkEndpoint(t, "before traffic", nsA, ifA, pubB, e2eLinkB)
	checkEndpoint(t, "before traffic", nsB, ifB, pubA, e2eLinkA)

	// The capture runs from before the first packet to the end of the
	// UDP flows, on B's side of the wire.
	capture := startCapture(t, nsB, "vb")

	ping := func(when string) {
		t.Helper()
		if out, err := nsA.Output("ping", "-c", "3", "-i", "0.2", "-W", "5", e2eInnerB.String()); err != nil {
			t.Fatalf("%s: ping A to B: %v: %s%s", when, err, out, logs())
		}
		if out, err := nsB.Output("ping", "-c", "3", "-i", "0.2", "-W", "5", e2eInnerA.String()); err != nil {
			t.Fatalf("%s: ping B to A: %v: %s%s", when, err, out, logs())
		}
	}
	ping("first")

	// TCP both ways, about 200 KB each.
	for _, d := range []struct {
		name           string
		client, server *testutil.Netns
		addr           netip.AddrPort
	}{
		{"A to B", nsA, nsB, netip.AddrPortFrom(e2eInnerB, 7000)},
		{"B to A", nsB, nsA, netip.AddrPortFrom(e2eInnerA, 7000)},
	} {
		tcpEchoServer(t, d.server, d.addr)
		if err := tcpEcho(d.client, d.addr, 200<<10); err != nil {
			t.Fatalf("TCP %s: %v%s", d.name, err, logs())
		}
	}
	checkEndpoint(t, "after TCP", nsA, ifA, pubB, e2eLinkB)
	checkEndpoint(t, "after TCP", nsB, ifB, pubA, e2eLinkA)

	// 64 inner UDP flows each way: distinct source ports, echoed back.
	const flows = 64
	for _, d := range []struct {
		name           string
		client, server *testutil.Netns
		addr           netip.AddrPort
	}{
		{"A to B", nsA, nsB, netip.AddrPortFrom(e2eInnerB, 9000)},
		{"B to A", nsB, nsA, netip.AddrPortFrom(e2eInnerA, 9000)},
	} {
		testutil.UDPEchoServer(t, d.server, d.addr)
		if err := testutil.UDPFlows(d.client, d.addr, flows, 1); err != nil {
			t.Fatalf("UDP %s: %v%s", d.name, err, logs())
		}
		checkEndpoint(t, "after UDP "+d.name, nsA, ifA, pubB, e2eLinkB)
		checkEndpoint(t, "after UDP "+d.name, nsB, ifB, pubA, e2eLinkA)
	}
	toB, fromB := capture.stop(t, e2eLinkB.Port())
	t.Logf("on B's veth: %d outer address pairs to B's port, %d from it", len(toB), len(fromB))
	if len(toB) < flows/2 || len(fromB) < flows/2 {
		t.Errorf("outer address pairs on the wire: %d to B's port, %d from it; want at least %d each for %d inner flows (capture dropped %d packets)",
			len(toB), len(fromB), flows/2, flows, capture.drops())
	}
	// -symmetric: B answers each flow on the pair A sent it on, reversed.
	reversed := 0
	for p := range fromB {
		if toB[outerPair{p.dst, p.src}] > 0 {
			reversed++
		}
	}
	if reversed < flows {
		t.Errorf("%d of B's %d outer pairs are the reverse of one of A's; want at least %d (one per UDP flow)", reversed, len(fromB), flows)
	}
	for p := range toB {
		if !e2ePrefixA.Contains(p.src) && p.src != e2eLinkA.Addr() || !e2ePrefixB.Contains(p.dst) && p.dst != e2eLinkB.Addr() {
			t.Errorf("a datagram to B went %v -> %v: outside both ends' prefixes and canonical addresses", p.src, p.dst)
		}
	}

	// Key rotation: A takes a new private key, B replaces A's old public
	// key with the new one; a fresh handshake must carry the pings.
	_, pubA2, keyFileA2 := wgKeyPair(t, dir, "a2.key")
	nsA.Run(t, "wg", "set", ifA, "private-key", keyFileA2)
	nsB.Run(t, "wg", "set", ifB, "peer", pubA, "remove",
		"peer", pubA2, "endpoint", e2eLinkA.String(), "allowed-ips", e2eInnerA.String()+"/32")
	ping("after the key rotation")
	checkEndpoint(t, "after the key rotation", nsA, ifA, pubB, e2eLinkB)
	checkEndpoint(t, "after the key rotation", nsB, ifB, pubA2, e2eLinkA)
	if hs := nsB.Run(t, "wg", "show", ifB, "latest-handshakes"); !strings.Contains(hs, pubA2) {
		t.Errorf("B reports no handshake with A's new key: %q", hs)
	}

	// Shutdown: A by SIGTERM, B by deleting its interface. Each must exit
	// cleanly and leave no interface, UAPI socket or local route.
	procA.Stop(t, syscall.SIGTERM)
	nsB.Run(t, "ip", "link", "del", ifB)
	procB.Stop(t, nil)
	t.Logf("A: %sB: %s", procA.Out, procB.Out)
	for _, e := range []struct {
		name   string
		ns     *testutil.Netns
		iface  string
		prefix netip.Prefix
		p      *testutil.Process
	}{{"A", nsA, ifA, e2ePrefixA, procA}, {"B", nsB, ifB, e2ePrefixB, procB}} {
		if out, err := e.ns.Output("ip", "link", "show", e.iface); err == nil {
			t.Errorf("%s: interface %s still there after exit: %s", e.name, e.iface, out)
		}
		if routes := e.ns.Run(t, "ip", "-6", "route", "show", "table", "local", "type", "local"); strings.Contains(routes, e.prefix.String()) {
			t.Errorf("%s: local route for %v still there after exit:\n%s", e.name, e.prefix, routes)
		}
		if _, err := os.Stat("/var/run/wireguard/" + e.iface + ".sock"); err == nil {
			t.Errorf("%s: UAPI socket of %s still there after exit", e.name, e.iface)
		}
		var spread, control int
		if _, err := fmt.Sscanf(lastLineWith(e.p.Out.String(), "sent "), "wgspread: sent %d spread, %d control", &spread, &control); err != nil {
			t.Errorf("%s: no final counters in the log: %v: %s", e.name, err, e.p.Out)
		} else if spread < flows || control == 0 {
			t.Errorf("%s: sent %d spread and %d control datagrams; want at least %d spread (the UDP flows alone) and a handshake", e.name, spread, control, flows)
		}
	}
}

// wgTunnel is the topology above with wgspread running and configured at
// both ends, the interfaces up.
type wgTunnel struct {
	nsA, nsB     *testutil.Netns
	ifA, ifB     string
	procA, procB *testutil.Process
	pubA, pubB   string
	dir          string
}

func (w *wgTunnel) logs() string { return fmt.Sprintf("\nA: %s\nB: %s", w.procA.Out, w.procB.Out) }

// newWgTunnel builds the topology and starts wgspread at both ends with
// extra flags, configured with wg set at A and wg setconf at B.
func newWgTunnel(t testing.TB, bin string, extra ...string) *wgTunnel {
	t.Helper()
	return newWgTunnelArgs(t, bin, extra, extra)
}

// newWgTunnelArgs is newWgTunnel with extra flags for each end.
func newWgTunnelArgs(t testing.TB, bin string, extraA, extraB []string) *wgTunnel {
	t.Helper()
	dir := t.TempDir()

	nsA, nsB := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, nsA, "va", nsB, "vb")
	nsA.Run(t, "ip", "addr", "add", "2001:db8:ff::1/64", "dev", "va", "nodad")
	nsB.Run(t, "ip", "addr", "add", "2001:db8:ff::2/64", "dev", "vb", "nodad")
	nsA.Run(t, "ip", "-6", "route", "add", e2ePrefixB.String(), "via", "2001:db8:ff::2")
	nsB.Run(t, "ip", "-6", "route", "add", e2ePrefixA.String(), "via", "2001:db8:ff::1")

	// The UAPI sockets live in the one /var/run/wireguard of all
	// namespaces: the names must be unique across test runs.
	ifA, ifB := "wa"+nsA.Name[3:], "wb"+nsB.Name[3:]
	var hashKey [16]byte
	rand.Read(hashKey[:])
	key := hex.EncodeToString(hashKey[:])
	procA := startWgspread(t, nsA, bin, slices.Concat(extraA, []string{"-prefix", e2ePrefixA.String(),
		"-peer-prefix", e2eLinkB.String() + "=" + e2ePrefixB.String(), "-hash-key", key, ifA})...)
	procB := startWgspread(t, nsB, bin, slices.Concat(extraB, []string{"-prefix", e2ePrefixB.String(),
		"-peer-prefix", e2eLinkA.String() + "=" + e2ePrefixA.String(), "-hash-key", key, ifB})...)

	// A with wg set, B with wg setconf.
	_, pubA, keyFileA := wgKeyPair(t, dir, "a.key")
	privB, pubB, _ := wgKeyPair(t, dir, "b.key")
	nsA.Run(t, "wg", "set", ifA, "listen-port", fmt.Sprint(e2eLinkA.Port()), "private-key", keyFileA,
		"peer", pubB, "endpoint", e2eLinkB.String(), "allowed-ips", e2eInnerB.String()+"/32")
	confB := filepath.Join(dir, "b.conf")
	conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = %d\n\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s/32\n",
		privB, e2eLinkB.Port(), pubA, e2eLinkA, e2eInnerA)
	if err := os.WriteFile(confB, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	nsB.Run(t, "wg", "setconf", ifB, confB)
	for _, e := range []struct {
		ns    *testutil.Netns
		iface string
		inner netip.Addr
	}{{nsA, ifA, e2eInnerA}, {nsB, ifB, e2eInnerB}} {
		e.ns.Run(t, "ip", "addr", "add", e.inner.String()+"/24", "dev", e.iface)
		e.ns.Run(t, "ip", "link", "set", e.iface, "up")
	}
	return &wgTunnel{nsA: nsA, nsB: nsB, ifA: ifA, ifB: ifB, procA: procA, procB: procB, pubA: pubA, pubB: pubB, dir: dir}
}

// lastLineWith returns the last line of s that contains sub.
func lastLineWith(s, sub string) string {
	var last string
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			last = line
		}
	}
	return last
}

// tcpEchoServer echoes every TCP connection to addr inside ns until the
// test ends.
func tcpEchoServer(t testing.TB, ns *testutil.Netns, addr netip.AddrPort) {
	t.Helper()
	tcpServer(t, ns, addr, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.Copy(c, c)
	})
}

// tcpServer listens on addr inside ns until the test ends and runs handle
// on each connection in its own goroutine, closing it afterwards.
func tcpServer(t testing.TB, ns *testutil.Netns, addr netip.AddrPort, handle func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// tcpEcho sends n random bytes to the echo server at addr from inside ns
// and checks that they come back unchanged.
func tcpEcho(ns *testutil.Netns, addr netip.AddrPort, n int) error {
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second); return err }); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read the echo: %w (got %d of %d bytes)", err, len(got), n)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("echo differs: got %d bytes, sent %d", len(got), n)
	}
	return nil
}

// outerPair is the outer address pair of a captured datagram.
type outerPair struct{ src, dst netip.Addr }

// capture reads IPv6 and IPv4 packets from an interface with AF_PACKET:
// a view of the wire independent of the adapter's own counters.
type capture struct {
	fd      int
	done    chan struct{}
	stopped atomic.Bool
	mu      sync.Mutex
	packets [][]byte
}

func startCapture(t testing.TB, ns *testutil.Netns, iface string) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	// ETH_P_ALL: a socket for one protocol sees only incoming packets;
	// the kernel hands outgoing ones to ETH_P_ALL sockets alone.
	proto := int(htons(unix.ETH_P_ALL))
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		// SOCK_DGRAM: the link layer header is stripped, the IPv6
		// packet starts at byte 0.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW): %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		// Room for the bursts of the TCP transfers, so the UDP flows
		// after them are not dropped.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			unix.Close(fd)
			return err
		}
		// A receive timeout lets the reader see stop.
		tv := unix.Timeval{Usec: 100_000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", iface, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 1<<16)
		for !c.stopped.Load() {
			n, from, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // the timeout, or an interrupted call
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Protocol != htons(unix.ETH_P_IPV6) && ll.Protocol != htons(unix.ETH_P_IP) {
				continue
			}
			c.mu.Lock()
			c.packets = append(c.packets, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.stopped.Store(true); <-c.done; unix.Close(c.fd) })
	return c
}

// stop ends the capture and returns the distinct outer address pairs of
// the UDP datagrams to port and from port.
func (c *capture) stop(t *testing.T, port uint16) (to, from map[outerPair]int) {
	t.Helper()
	c.stopped.Store(true)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	to, from = map[outerPair]int{}, map[outerPair]int{}
	for _, p := range c.packets {
		// IPv6 header (RFC 8200): next header at 6, addresses at 8 and
		// 24; UDP ports right after it. wgspread sends no extension
		// headers.
		if len(p) < 40+8 || p[0]>>4 != 6 || p[6] != unix.IPPROTO_UDP {
			continue
		}
		pair := outerPair{netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))}
		sport, dport := binary.BigEndian.Uint16(p[40:]), binary.BigEndian.Uint16(p[42:])
		if dport == port {
			to[pair]++
		}
		if sport == port {
			from[pair]++
		}
	}
	return to, from
}

func (c *capture) drops() int {
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return -1
	}
	return int(st.Drops)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
