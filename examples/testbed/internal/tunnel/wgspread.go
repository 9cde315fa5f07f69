package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/internal/netns"
)

// WireGuard in the one-flow and spread modes (-vpn wireguard), run by
// examples/wgspread: wireguard-go's device with its own StdNetBind (one
// outer flow between the two hosts' own addresses, the WireGuard users run
// today), or with this module's Bind, spreading each inner flow over the
// same /64 of each site that flowtun spreads over. Each end is configured
// with the wg tool through wgspread's UAPI socket, as a user would.
//
// Like flowtun, the binary is built on the host before the testbed
// re-executes itself in the VM.

// WgspreadPackage is the import path go build makes the tunnel from.
const WgspreadPackage = "github.com/flowspread/flowspread/examples/wgspread"

var (
	wgsInnerClient = netip.MustParseAddr("2001:db8:d::a")
	wgsInnerServer = netip.MustParseAddr("2001:db8:d::b")
)

const (
	wgsPort = 51820
	// wgsReady is what wgspread logs once its UAPI socket listens: wg
	// may configure it after it.
	wgsReady = " ready: "
)

// Wgspread is one wgspread end in the client namespace and one in the
// server namespace.
type Wgspread struct {
	Bin    string
	Spread bool
	// Open runs wgspread -open: each end's spread range reachable from
	// the other's, every flow on its own pair at once (no firewall).
	Open bool
	// Keepalive is WireGuard's persistent keepalive (wg set ...
	// persistent-keepalive), which holds the canonical pair open in a
	// firewall; 0 is off.
	Keepalive time.Duration
	ends      []*tunnelEnd
	dir       string // holds the hash key file
}

// wgspreadEnd is what one end's command lines are made from.
type wgspreadEnd struct {
	side string
	ns   netns.Namespace
	// iface names the interface. The UAPI sockets of all namespaces
	// share one /var/run/wireguard, so it must differ between the ends
	// and from any other run's.
	iface string
	// self and peer are the hosts' own addresses: each end's canonical
	// endpoint, where the stock bind sends from and to.
	self, peer         netip.Addr
	prefix, peerPrefix netip.Prefix
	inner, peerInner   netip.Addr
}

// NewWgspread returns wgspread as the binary bin runs it, spreading or
// with wireguard-go's own StdNetBind.
func NewWgspread(bin string, spread bool) (*Wgspread, error) {
	if bin == "" {
		return nil, errors.New("no wgspread binary: the testbed builds it before the run (-wgspread PATH names one)")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("wgspread binary: %w", err)
	}
	return &Wgspread{Bin: bin, Spread: spread}, nil
}

// wgspreadEnds returns the client's and the server's end, their interfaces
// named with suffix.
func wgspreadEnds(topo *network.Topology, suffix string) [2]wgspreadEnd {
	return [2]wgspreadEnd{
		{"client", topo.Client, "wgsc" + suffix, topo.ClientHost, topo.ServerHost, topo.ClientSpread, topo.ServerSpread, wgsInnerClient, wgsInnerServer},
		{"server", topo.Server, "wgss" + suffix, topo.ServerHost, topo.ClientPublic, topo.ServerSpread, topo.ClientSpread, wgsInnerServer, wgsInnerClient},
	}
}

// wgspreadArgs returns the command line of one end's wgspread: the stock
// bind, or spreading over e.prefix towards e.peerPrefix with the hash key
// in keyFile (the same at both ends; a file, as the command line is
// readable by every user).
func wgspreadArgs(e wgspreadEnd, spread, open bool, keyFile string) []string {
	if !spread {
		return []string{"-stock-bind", e.iface}
	}
	args := []string{"-prefix", e.prefix.String(),
		"-peer-prefix", netip.AddrPortFrom(e.peer, wgsPort).String() + "=" + e.peerPrefix.String(),
		"-hash-key-file", keyFile}
	if open {
		args = append(args, "-open")
	}
	return append(args, e.iface)
}

// wgSetArgs returns the wg command that configures one end, which reads
// the private key from its standard input: a pipe, never a file (the VM
// has no /dev/stdin link: no udev there).
func wgSetArgs(e wgspreadEnd, peerPublic string, keepalive time.Duration) []string {
	args := []string{"wg", "set", e.iface, "listen-port", strconv.Itoa(wgsPort), "private-key", "/proc/self/fd/0",
		"peer", peerPublic, "endpoint", netip.AddrPortFrom(e.peer, wgsPort).String(),
		"allowed-ips", netip.PrefixFrom(e.peerInner, e.peerInner.BitLen()).String()}
	if keepalive > 0 {
		args = append(args, "persistent-keepalive", strconv.Itoa(int(keepalive/time.Second)))
	}
	return args
}

// Start runs wgspread at both ends, configures them with wg and ip, and
// returns once a probe has crossed the tunnel: the handshake is done.
func (w *Wgspread) Start(ctx context.Context, topo *network.Topology) (InnerPath, error) {
	var suffix [3]byte
	var hashKey [16]byte
	rand.Read(suffix[:])
	rand.Read(hashKey[:])
	ends := wgspreadEnds(topo, hex.EncodeToString(suffix[:]))
	fail := func(err error) (InnerPath, error) {
		w.Stop()
		return InnerPath{}, err
	}
	dir, err := os.MkdirTemp("", "fstb-wgspread-")
	if err != nil {
		return InnerPath{}, err
	}
	w.dir = dir
	keyFile := filepath.Join(dir, "hash-key")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(hashKey[:])+"\n"), 0o600); err != nil {
		return fail(err)
	}
	var private, public [2]string
	for i, e := range ends {
		end, err := startTunnelEnd(e.ns, "wgspread", e.side, w.Bin, wgsReady, wgspreadArgs(e, w.Spread, w.Open, keyFile))
		if err != nil {
			return fail(err)
		}
		w.ends = append(w.ends, end)
		if private[i], public[i], err = wgKeyPair(e.ns); err != nil {
			return fail(err)
		}
	}
	for i, e := range ends {
		cmd := e.ns.Command(wgSetArgs(e, public[1-i], w.Keepalive)...)
		cmd.Stdin = strings.NewReader(private[i] + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("wg set %s in %s: %w: %s", e.iface, e.ns, err, bytes.TrimSpace(out)))
		}
		if err := e.ns.IPBatch(
			"addr add "+e.inner.String()+"/64 dev "+e.iface+" nodad",
			"link set "+e.iface+" up",
		); err != nil {
			return fail(err)
		}
		// fq_codel on the device, as for flowtun: the VM has no systemd
		// to make it the default, and a FIFO there would queue the inner
		// probe behind the inner bulk flows.
		if err := queueTunnelDevice(e.ns, e.iface); err != nil {
			return fail(err)
		}
	}
	if err := topo.CheckReach(wgsInnerServer); err != nil {
		return fail(fmt.Errorf("nothing crosses WireGuard (wgspread): %w", err))
	}
	return InnerPath{Client: wgsInnerClient, Server: wgsInnerServer}, nil
}

// Stop ends both wgspread processes with SIGTERM; each then removes its
// interface, UAPI socket and local route.
func (w *Wgspread) Stop() error {
	var errs []error
	for _, e := range w.ends {
		if err := e.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	w.ends = nil
	if w.dir != "" {
		os.RemoveAll(w.dir)
		w.dir = ""
	}
	return errors.Join(errs...)
}
