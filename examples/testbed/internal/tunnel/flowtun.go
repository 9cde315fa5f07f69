package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/netns"
)

// flowtun, the tunnel under test (examples/flowtun), in its two modes:
// spreading each inner flow over its own outer address pair, and off (one
// outer flow between the two hosts' own addresses, as any VPN sends).
//
// The binary is built on the host, before the testbed re-executes itself
// in the VM: compiling under emulation would take minutes.

const (
	ftIf   = "ft0"
	ftPort = 51820
	// ftReady is what flowtun logs once its device is up and its socket
	// bound: traffic may flow after it.
	ftReady = " up, MTU "
	// ftStartTimeout bounds a flowtun start, which under emulation takes
	// a few hundred milliseconds.
	ftStartTimeout = 20 * time.Second
)

// The inner addresses. Each end spreads over its topology's spread
// prefix (Topology.ClientSpread, ServerSpread), which flowtun makes local
// with an AnyIP route.
var (
	ftInnerClient = netip.MustParseAddr("2001:db8:e::a")
	ftInnerServer = netip.MustParseAddr("2001:db8:e::b")
)

// FlowtunPort is the UDP port of both flowtun ends: the one a firewall
// in front of an end must let in.
const FlowtunPort = ftPort

// FlowtunPackage is the import path go build makes the tunnel from.
const FlowtunPackage = "github.com/flowspread/flowspread/examples/flowtun"

// Build builds the command pkg of this module into dir, from the
// checkout that holds the working directory (or this program), and
// returns the binary's path.
func Build(dir, pkg string) (string, error) {
	goTool, err := findGo()
	if err != nil {
		return "", err
	}
	root, err := findCheckout()
	if err != nil {
		return "", err
	}
	bin, err := filepath.Abs(filepath.Join(dir, "."+path.Base(pkg)+"-"+strconv.Itoa(os.Getpid())))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(goTool, "build", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the tunnel (go build %s in %s): %w: %s", pkg, root, err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// findGo returns the go command: on PATH, else where Go installs itself,
// else in the toolchain this program was built with.
func findGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/local/go/bin/go", filepath.Join(runtime.GOROOT(), "bin", "go")} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("the one-flow and spread modes need Go to build their tunnel (examples/flowtun or examples/wgspread), and no go command was found: install Go, or pass -flowtun or -wgspread PATH of a built one")
}

// findCheckout returns the directory of flowspread's go.mod, going up from
// the working directory, then from this program's directory.
func findCheckout() (string, error) {
	runner, err := network.FindVMRunner("")
	if err == nil {
		root := filepath.Dir(filepath.Dir(runner))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root, nil
		}
	}
	return "", errors.New("cannot find the flowspread checkout to build the tunnel: run the testbed from inside it, or pass -flowtun (or -wgspread) PATH")
}

// Flowtun is one flowtun end in the client namespace and one in the
// server namespace.
type Flowtun struct {
	Bin    string
	Spread bool
	// Open declares each end's spread range reachable from the other's
	// (flowtun -open): flows go on their own pairs at once. Without it
	// flowtun sends a flow on the canonical pair (the hosts' own
	// addresses) until the peer's traffic for it has arrived on its
	// spread pair, as behind a stateful firewall it must.
	Open bool
	// Keepalive is flowtun's -keepalive on the canonical pair; 0 is off.
	Keepalive time.Duration
	// ServerSingle gives the server no spread prefix: it has one
	// address, which the client spreads towards from its range, and it
	// answers each flow on the pair it arrived on.
	ServerSingle bool
	// Dimension is what the spreading spreads over: DimensionAddresses
	// (or empty), DimensionPorts or DimensionBoth.
	Dimension string
	// NAT: the client is behind a NAT, which translates its ports: the
	// server learns each flow's port (nat-ports) instead of knowing them.
	NAT  bool
	dir  string // PSK and counters
	ends []*tunnelEnd
}

// tunnelEnd is one running end of a tunnel program (flowtun or wgspread).
type tunnelEnd struct {
	side  string
	p     *netns.Process
	stats string // flowtun's counters file
}

// NewFlowtun returns flowtun as the binary bin runs it, spreading or not.
func NewFlowtun(bin string, spread bool) (*Flowtun, error) {
	if bin == "" {
		return nil, errors.New("no flowtun binary: the testbed builds it before the run (-flowtun PATH names one)")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("flowtun binary: %w", err)
	}
	return &Flowtun{Bin: bin, Spread: spread}, nil
}

// Start runs flowtun at both ends.
func (f *Flowtun) Start(ctx context.Context, topo *network.Topology) (InnerPath, error) {
	dir, err := os.MkdirTemp("", "fstb-flowtun-")
	if err != nil {
		return InnerPath{}, err
	}
	f.dir = dir
	var key [32]byte
	rand.Read(key[:])
	psk := filepath.Join(dir, "psk")
	if err := os.WriteFile(psk, []byte(hex.EncodeToString(key[:])+"\n"), 0o600); err != nil {
		f.Stop()
		return InnerPath{}, err
	}
	ends := []struct {
		side               string
		ns                 netns.Namespace
		self, peer         netip.Addr
		prefix, peerPrefix netip.Prefix
		inner              netip.Addr
	}{
		// Behind the NAT the client's canonical address is the public
		// one, as the server knows it: both ends must name the same pair
		// (flowtun -nat: -self is not this host's address).
		{"client", topo.Client, topo.ClientPublic, topo.ServerHost, topo.ClientSpread, topo.ServerSpread, ftInnerClient},
		{"server", topo.Server, topo.ServerHost, topo.ClientPublic, topo.ServerSpread, topo.ClientSpread, ftInnerServer},
	}
	for _, e := range ends {
		args := []string{"-name", ftIf, "-listen-port", strconv.Itoa(ftPort),
			"-peer", netip.AddrPortFrom(e.peer, ftPort).String(),
			"-self", netip.AddrPortFrom(e.self, ftPort).String(),
			"-psk-file", psk,
			"-addr", e.inner.String() + "/64",
			"-stats", filepath.Join(dir, e.side+".json")}
		if e.side == "client" && topo.NAT {
			args = append(args, "-nat")
		}
		args = append(args, f.spreadArgs(e.side, e.prefix, e.peerPrefix)...)
		args = append(args, f.pathArgs(e.side)...)
		end, err := startTunnelEnd(e.ns, "flowtun", e.side, f.Bin, ftReady, args)
		if err != nil {
			f.Stop()
			return InnerPath{}, err
		}
		end.stats = filepath.Join(dir, e.side+".json")
		f.ends = append(f.ends, end)
		// The tunnel's own device queue is where inner packets wait
		// when the tunnel cannot send at once. Hosts default to
		// fq_codel there (systemd sets net.core.default_qdisc); the VM
		// has no systemd and would leave a 500-packet FIFO, in which
		// the inner probe waits behind the inner bulk flows before the
		// tunnel even sees it.
		if err := queueTunnelDevice(e.ns, ftIf); err != nil {
			f.Stop()
			return InnerPath{}, err
		}
	}
	return InnerPath{Client: ftInnerClient, Server: ftInnerServer}, nil
}

// What Flowtun.Dimension chooses from.
const (
	DimensionAddresses = "addresses"
	DimensionPorts     = "ports"
	DimensionBoth      = "both"
)

// The client's source ports when it spreads over ports: 256
// (conn.DefaultPortBits), a power of two as flowtun wants, above the
// ports Linux hands out by default (net.ipv4.ip_local_port_range,
// 32768-60999), so no other socket holds one, as the docs recommend.
const (
	ftPortsFirst = 61000
	ftPortsCount = 256
)

// spreadArgs are the -spread and range flags of the end side, whose
// spread prefix is prefix and whose peer's is peerPrefix.
func (f *Flowtun) spreadArgs(side string, prefix, peerPrefix netip.Prefix) []string {
	switch {
	case !f.Spread:
		return []string{"-spread", "off"}
	case f.Dimension == DimensionPorts || f.Dimension == DimensionBoth:
		return f.portArgs(side, prefix, peerPrefix)
	case f.ServerSingle && side == "client":
		return []string{"-spread", "src", "-prefix", prefix.String()}
	case f.ServerSingle:
		return []string{"-spread", "dst", "-peer-prefix", peerPrefix.String()}
	}
	return []string{"-spread", "both", "-prefix", prefix.String(), "-peer-prefix", peerPrefix.String()}
}

// portArgs are the range flags of the end side when it spreads over
// ports (and, with DimensionBoth, addresses too): the client's range is
// its source ports, and the server, on one address and one port, answers
// each flow on the port pair it arrived on. Behind the NAT the server
// cannot know the client's ports, which the NAT translates: it learns
// them (nat-ports).
func (f *Flowtun) portArgs(side string, prefix, peerPrefix netip.Prefix) []string {
	clientRange := fmt.Sprintf("ports=%d-%d", ftPortsFirst, ftPortsFirst+ftPortsCount-1)
	if f.NAT && side == "server" {
		clientRange = fmt.Sprintf("nat-ports=%d", ftPortsCount)
	}
	if f.Dimension == DimensionBoth {
		clientPrefix := prefix
		if side == "server" {
			clientPrefix = peerPrefix
		}
		clientRange = fmt.Sprintf("prefix=%s,bits=%d,%s", clientPrefix, flowaddr.DefaultBits, clientRange)
	}
	spreadServer := f.Dimension == DimensionBoth && !f.ServerSingle
	switch {
	case side == "client" && spreadServer:
		return []string{"-range", clientRange, "-peer-prefix", peerPrefix.String()}
	case side == "client":
		return []string{"-range", clientRange}
	case spreadServer:
		return []string{"-prefix", prefix.String(), "-peer-range", clientRange}
	}
	return []string{"-peer-range", clientRange}
}

// pathArgs returns the flags of one end's paths: -open where the end
// sends to the peer's range (flowtun refuses -open without one: the
// one-flow mode, the client of a server with one address, and a peer
// behind a NAT), and the keepalive.
func (f *Flowtun) pathArgs(side string) []string {
	var args []string
	spread := f.spreadArgs(side, netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("2001:db8::/64"))
	toPeerRange := slices.Contains(spread, "-peer-prefix") || slices.Contains(spread, "-peer-range") && !f.NAT
	if f.Open && toPeerRange {
		args = append(args, "-open")
	}
	if f.Keepalive > 0 {
		args = append(args, "-keepalive", f.Keepalive.String())
	}
	return args
}

// queueTunnelDevice puts fq_codel on a tunnel's device, where inner
// packets wait when the tunnel cannot send at once. Where this kernel has
// no fq_codel (the hosts of -vm router on a build machine), the device
// keeps its default queue: the tunnel runs natively there and keeps up
// with the bottleneck, so next to nothing waits in it.
func queueTunnelDevice(ns netns.Namespace, dev string) error {
	err := ns.Run("tc", "qdisc", "replace", "dev", dev, "root", "fq_codel")
	if err != nil && strings.Contains(err.Error(), "qdisc kind is unknown") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fq_codel on the tunnel's device: %w", err)
	}
	return nil
}

// startTunnelEnd starts one end of program bin and waits until it logs a
// line containing ready.
func startTunnelEnd(ns netns.Namespace, program, side, bin, ready string, args []string) (*tunnelEnd, error) {
	// The highest priority, as the wire's: a real VPN end has a CPU of its
	// own, and under emulation a tunnel at normal priority waits behind
	// the load generators it carries.
	cmd := ns.Command(append([]string{"nice", "-n", "-20", bin}, args...)...)
	p, err := netns.Start(cmd, program+" ("+side+")", ready, 1, ftStartTimeout)
	if err != nil {
		return nil, err
	}
	return &tunnelEnd{side: side, p: p}, nil
}

// stop ends the process with SIGTERM (it then removes its device and
// route and writes its counters), or kills it if it does not end.
func (e *tunnelEnd) stop() error { return e.p.Stop(10 * time.Second) }

// Stop ends both flowtun processes.
func (f *Flowtun) Stop() error {
	var errs []error
	for _, e := range f.ends {
		if err := e.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	f.ends = nil
	if f.dir != "" {
		os.RemoveAll(f.dir)
		f.dir = ""
	}
	return errors.Join(errs...)
}

// Counters asks each end for its counters (SIGUSR1 makes flowtun write
// them) and returns them by side, as flowtun wrote them.
func (f *Flowtun) Counters() map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for _, e := range f.ends {
		os.Remove(e.stats)
		if network.AskCounters(e.p) != nil {
			continue
		}
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			data, err := os.ReadFile(e.stats)
			if err == nil && json.Valid(data) {
				out[e.side] = trimCounters(data)
				break
			}
		}
	}
	return out
}

// Drops sums the datagrams the ends dropped, from their counters.
func Drops(counters map[string]json.RawMessage) (dropped, auth uint64) {
	for _, raw := range counters {
		var s struct {
			Malformed uint64 `json:"dropped_malformed"`
			Auth      uint64 `json:"dropped_auth"`
			Replay    uint64 `json:"dropped_replay"`
			TooOld    uint64 `json:"dropped_too_old"`
			BadInner  uint64 `json:"dropped_bad_inner"`
			SendErrs  uint64 `json:"send_errors"`
			TunErrs   uint64 `json:"tun_write_errors"`
		}
		if json.Unmarshal(raw, &s) != nil {
			continue
		}
		dropped += s.Malformed + s.Auth + s.Replay + s.TooOld + s.BadInner + s.SendErrs + s.TunErrs
		auth += s.Auth
	}
	return dropped, auth
}

// PathCounters are what flowtun's ends, summed, counted of the paths
// they learnt (conn.Stats): datagrams sent on the canonical pair while a
// flow's own pair was not known open, probe copies sent on spread pairs,
// and pairs that became known open.
type PathCounters struct {
	SentWaiting uint64 `json:"sent_waiting"`
	SentProbes  uint64 `json:"sent_probes"`
	PathsOpened uint64 `json:"paths_opened"`
	Keepalives  uint64 `json:"keepalives_sent"`
}

// Paths sums the path counters of the ends' counters (as Counters
// returns them).
func Paths(counters map[string]json.RawMessage) PathCounters {
	var sum PathCounters
	for _, raw := range counters {
		var s struct {
			Keepalives uint64                                                `json:"keepalives_sent"`
			Conn       struct{ SentWaiting, SentProbes, PathsOpened uint64 } `json:"conn"`
		}
		if json.Unmarshal(raw, &s) != nil {
			continue
		}
		sum.SentWaiting += s.Conn.SentWaiting
		sum.SentProbes += s.Conn.SentProbes
		sum.PathsOpened += s.Conn.PathsOpened
		sum.Keepalives += s.Keepalives
	}
	return sum
}

// Since is p less the counters of earlier.
func (p PathCounters) Since(earlier PathCounters) PathCounters {
	return PathCounters{p.SentWaiting - earlier.SentWaiting, p.SentProbes - earlier.SentProbes,
		p.PathsOpened - earlier.PathsOpened, p.Keepalives - earlier.Keepalives}
}

// trimCounters drops the per-address datagram counts from flowtun's
// counters: one number per address of the range, too long for the report.
func trimCounters(data []byte) json.RawMessage {
	var s map[string]json.RawMessage
	if json.Unmarshal(data, &s) != nil {
		return json.RawMessage(data)
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(s["conn"], &c) == nil {
		delete(c, "SentPerAddress")
		if b, err := json.Marshal(c); err == nil {
			s["conn"] = b
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return json.RawMessage(data)
	}
	return b
}
