package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/internal/netns"
)

// Kernel WireGuard, the control. Its outer packets all carry one
// 5-tuple; the kernel computes skb->hash from the inner packet before
// encrypting (commit c78a0b4a), which is why the testbed needs its wire.

const (
	wgIf   = "wg0"
	wgPort = 51820
)

var (
	wgInnerNet    = netip.MustParsePrefix("2001:db8:f::/64")
	wgInnerClient = netip.MustParseAddr("2001:db8:f::a")
	wgInnerServer = netip.MustParseAddr("2001:db8:f::b")
)

// WireGuard is kernel WireGuard between the two hosts' own addresses.
type WireGuard struct {
	topo *network.Topology
}

// Start makes and configures a wg0 at each end.
func (w *WireGuard) Start(ctx context.Context, topo *network.Topology) (InnerPath, error) {
	w.topo = topo
	clientKey, clientPub, err := wgKeyPair(topo.Client)
	if err != nil {
		return InnerPath{}, err
	}
	serverKey, serverPub, err := wgKeyPair(topo.Server)
	if err != nil {
		return InnerPath{}, err
	}
	ends := []struct {
		ns          netns.Namespace
		key, peer   string
		self, inner netip.Addr
		remote      netip.Addr
	}{
		{topo.Client, clientKey, serverPub, topo.ClientHost, wgInnerClient, topo.ServerHost},
		{topo.Server, serverKey, clientPub, topo.ServerHost, wgInnerServer, topo.ClientPublic},
	}
	for _, e := range ends {
		if err := e.ns.IPBatch("link add " + wgIf + " type wireguard"); err != nil {
			w.Stop()
			return InnerPath{}, fmt.Errorf("kernel WireGuard (needs the wireguard module): %w", err)
		}
		cmd := e.ns.Command("wg", "set", wgIf, "listen-port", fmt.Sprint(wgPort), "private-key", "/proc/self/fd/0",
			"peer", e.peer, "endpoint", netip.AddrPortFrom(e.remote, wgPort).String(),
			"allowed-ips", wgInnerNet.String())
		// The key goes through a pipe, never a file (the VM has no
		// /dev/stdin link: no udev there).
		cmd.Stdin = strings.NewReader(e.key + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			w.Stop()
			return InnerPath{}, fmt.Errorf("wg set in %s: %w: %s", e.ns, err, bytes.TrimSpace(out))
		}
		if err := e.ns.IPBatch(
			"addr add "+e.inner.String()+"/64 dev "+wgIf+" nodad",
			"link set "+wgIf+" up",
		); err != nil {
			w.Stop()
			return InnerPath{}, err
		}
	}
	return InnerPath{Client: wgInnerClient, Server: wgInnerServer}, nil
}

// Stop removes both wg0.
func (w *WireGuard) Stop() error {
	if w.topo == nil {
		return nil
	}
	var errs []error
	for _, ns := range []netns.Namespace{w.topo.Client, w.topo.Server} {
		if ns.Command("ip", "link", "show", wgIf).Run() != nil {
			continue // never made
		}
		if err := ns.Run("ip", "link", "del", wgIf); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// wgKeyPair makes a WireGuard key pair with the wg tool.
func wgKeyPair(ns netns.Namespace) (private, public string, err error) {
	out, err := ns.Output("wg", "genkey")
	if err != nil {
		return "", "", err
	}
	private = strings.TrimSpace(string(out))
	cmd := ns.Command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(private + "\n")
	pub, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("wg pubkey: %w", err)
	}
	return private, strings.TrimSpace(string(pub)), nil
}
