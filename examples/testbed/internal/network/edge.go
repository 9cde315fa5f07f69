package network

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/netns"
)

// The client's edge is the namespace that links to the router: the
// client itself, or the home router in front of it (Options.NAT):
//
//	client ==c0--hl== home (NAT) ==hu--rc== router ==rs--s0== server

// edge returns the namespace that links to the router on the client's
// side, and its interface towards the router.
func (t *Topology) edge() (netns.Namespace, string) {
	if t.Home != "" {
		return t.Home, homeUpIf
	}
	return t.Client, clientIf
}

// edgeCommands configure the edge once its link to the router exists.
func (t *Topology) edgeCommands() []string {
	if t.Home != "" {
		return t.plan.homeLinkCommands()
	}
	return t.plan.clientLinkCommands()
}

// linkHome links the client to the home router and puts the NAT on it;
// nothing without one.
func (t *Topology) linkHome(progress func(string)) error {
	if t.Home == "" {
		return nil
	}
	progress("linking client-home router (NAT44: nftables masquerade towards the router)")
	lines := append([]string{"link add " + clientIf + " type veth peer name " + homeLANIf + " netns " + string(t.Home)},
		t.plan.clientLinkCommands()...)
	if err := t.Client.IPBatch(lines...); err != nil {
		return err
	}
	for n, dev := range map[netns.Namespace]string{t.Client: clientIf, t.Home: homeLANIf} {
		if err := n.Run(append([]string{"ethtool", "-K", dev}, segmentationOff...)...); err != nil {
			return err
		}
	}
	cmd := t.Home.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(natRules())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("the NAT's nftables rules in %s: %w: %s", t.Home, err, bytes.TrimSpace(out))
	}
	return nil
}

// proxyNeighbours makes the on-link client answer neighbour discovery for
// its range, one proxy entry per address on its link to the router, with
// conn/host.AddNeighbourProxies run in its namespace (this program as
// `testbed neighbour-proxies`); nothing unless Options.OnLink. The
// entries go with the namespace.
func (t *Topology) proxyNeighbours(progress func(string)) error {
	if !t.OnLink {
		return nil
	}
	progress(fmt.Sprintf("on-link client: proxy NDP for the %d addresses of %s on %s (no route to it on the router)",
		1<<flowaddr.DefaultBits, t.ClientSpread, clientIf))
	if t.proxyDelay != nil {
		// In USER_HZ ticks of 10 ms (Documentation/networking/ip-sysctl.rst).
		ticks := strconv.FormatInt(int64(*t.proxyDelay/(10*time.Millisecond)), 10)
		if err := t.Client.Run("sysctl", "-q", "-w", "net.ipv6.neigh."+clientIf+".proxy_delay="+ticks); err != nil {
			return err
		}
	}
	return t.Client.Run(t.self, "neighbour-proxies", clientIf, t.ClientSpread.String(), strconv.Itoa(flowaddr.DefaultBits))
}

// NeighbourProxiesMain is `testbed neighbour-proxies LINK PREFIX BITS`: in
// the namespace it runs in, the kernel answers neighbour solicitations on
// LINK for the 2^BITS addresses of PREFIX that flowtun spreads over
// (flowaddr's default, contiguous layout), and keeps answering after it
// exits.
func NeighbourProxiesMain(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: testbed neighbour-proxies LINK PREFIX BITS")
		return 2
	}
	prefix, err := netip.ParsePrefix(args[1])
	bits, berr := strconv.Atoi(args[2])
	if err = errors.Join(err, berr); err != nil {
		fmt.Fprintln(os.Stderr, "testbed neighbour-proxies:", err)
		return 2
	}
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: prefix, Bits: bits})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed neighbour-proxies:", err)
		return 1
	}
	p, err := host.AddNeighbourProxies(args[0], m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed neighbour-proxies:", err)
		return 1
	}
	fmt.Printf("%d proxy entries added on %s, %d there already\n", len(p.Added()), p.Link(), p.Present())
	return 0
}

// Neighbours are the router's neighbour entries on its link to the
// client (ip -6 neigh show dev rc): what an on-link client's spreading
// costs its upstream router's table.
type Neighbours struct {
	// Entries are every entry; InRange those of the client's range.
	Entries int `json:"entries"`
	InRange int `json:"in_range"`
	// States counts the entries by state (REACHABLE, STALE, FAILED...).
	States map[string]int `json:"states"`
}

// FlushNeighbours empties the router's neighbour table on the client
// link, so that a count after a mode is that mode's.
func (t *Topology) FlushNeighbours() error {
	return t.Router.Run("ip", "-6", "neigh", "flush", "dev", RouterClientIf)
}

// CountNeighbours counts the router's neighbour entries on the client link.
func (t *Topology) CountNeighbours() (Neighbours, error) {
	out, err := t.Router.Output("ip", "-6", "neigh", "show", "dev", RouterClientIf)
	if err != nil {
		return Neighbours{}, err
	}
	return parseNeighbours(out, t.ClientSpread), nil
}

// parseNeighbours reads ip neigh show dev X: one entry a line, its
// address first and its state last ("2001:db8::5 lladdr 52:54:00:00:00:01
// router REACHABLE").
func parseNeighbours(out []byte, spread netip.Prefix) Neighbours {
	n := Neighbours{States: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		n.Entries++
		if spread.IsValid() && spread.Contains(a) {
			n.InRange++
		}
		n.States[f[len(f)-1]]++
	}
	return n
}
