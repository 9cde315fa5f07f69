package report

import (
	"fmt"
	"io"
	"strings"
)

// Paths is what a mode's tunnel did to open its flows' paths through the
// firewalls (-firewall) and what crossed the router's links.
type Paths struct {
	// Firewall is where the stateful firewalls stood: none, client or
	// both. Open says flowtun ran with -open (sending each flow on its
	// own pair at once), Keepalive its -keepalive in seconds.
	Firewall string `json:"firewall"`
	// NAT: a home router masqueraded the client (NAT44, -nat).
	NAT bool `json:"nat,omitempty"`
	// Tunnel names the tunnel program; Open and Keepalive are flowtun's.
	Tunnel     string  `json:"tunnel"`
	Open       bool    `json:"open"`
	KeepaliveS float64 `json:"keepalive_s,omitempty"`
	// FromClient and FromServer are the flows the reachability checks
	// opened from each end through the tunnel, before the load: pings
	// with distinct echo ids and a TCP connection.
	FromClient Reach `json:"from_client"`
	FromServer Reach `json:"from_server"`
	// Checks are the counters over the reachability checks, Mode over
	// the whole mode (checks, load and idle check).
	Checks PathCounters `json:"checks"`
	Mode   PathCounters `json:"mode"`
	// PairsOut and PairsIn are the distinct outer address pairs of the
	// tunnel's datagrams on the client's link to the router over the
	// whole mode: client to server, and server to client. -1 when not
	// counted (no nft).
	PairsOut int `json:"pairs_client_to_server"`
	PairsIn  int `json:"pairs_server_to_client"`
	// Idle is the idle check (-idle-check), when it ran.
	Idle *IdleCheck `json:"idle_check,omitempty"`
	// MustReach says every flow must get through: true unless -open ran
	// behind a firewall, to show the flows it black-holes.
	MustReach bool `json:"must_reach"`
}

// Reach is the flows opened from one end.
type Reach struct {
	Attempted int      `json:"attempted"`
	Completed int      `json:"completed"`
	Failed    []string `json:"failed,omitempty"`
}

// PathCounters are the firewalls' drops, the tunnel's path counters
// (both ends summed) and the TCP reordering the hosts' kernels saw.
type PathCounters struct {
	FirewallDrops uint64 `json:"firewall_drops"`
	SentWaiting   uint64 `json:"sent_waiting"`
	ProbesSent    uint64 `json:"probes_sent"`
	PathsOpened   uint64 `json:"paths_opened"`
	// ReorderEvents sums nstat's TcpExtTCPSACKReorder, TCPTSReorder
	// and TCPRenoReorder in the client and server namespaces.
	ReorderEvents uint64 `json:"reorder_events"`
}

// IdleCheck is a TCP connection through the tunnel left idle past the
// firewall's UDP timeout, then sent a segment from each end (the
// server's first).
type IdleCheck struct {
	IdleS     float64 `json:"idle_s"`
	Completed bool    `json:"completed"`
	Error     string  `json:"error,omitempty"`
	// Retransmits is nstat's TcpRetransSegs over the check, both
	// namespaces summed.
	Retransmits uint64 `json:"retransmits"`
}

// checkPaths makes the row invalid when a flow that must get through did
// not.
func (r *ModeResult) checkPaths(invalid func(format string, args ...any)) {
	p := r.Paths
	if p == nil || !p.MustReach {
		return
	}
	for _, side := range []struct {
		name string
		r    Reach
	}{{"client", p.FromClient}, {"server", p.FromServer}} {
		if side.r.Completed < side.r.Attempted {
			invalid("%d of %d flows opened from the %s through the tunnel did not get through (%s)",
				side.r.Attempted-side.r.Completed, side.r.Attempted, side.name, strings.Join(side.r.Failed, "; "))
		}
	}
	if p.Idle != nil && !p.Idle.Completed {
		invalid("the TCP connection left idle %.0f s did not carry a segment each way after it: %s", p.Idle.IdleS, p.Idle.Error)
	}
}

// writePaths prints one line per mode with path checks.
func (rep *Report) writePaths(w io.Writer) {
	heading := false
	for _, r := range rep.Modes {
		p := r.Paths
		if p == nil {
			continue
		}
		if !heading {
			fmt.Fprintln(w, "\npaths (flows opened from each end through the tunnel before the load; counters over those checks | over the whole mode):")
			if t := rep.Config.Conntrack; t != nil {
				fmt.Fprintf(w, "  conntrack UDP timeouts: %d s unreplied, %d s stream\n", t.Unreplied, t.Stream)
			}
			heading = true
		}
		how := p.Tunnel
		switch {
		case p.Tunnel != "flowtun":
		case p.Open:
			how = "flowtun -open"
		default:
			how = "flowtun waits for each path"
		}
		if p.KeepaliveS > 0 {
			how += fmt.Sprintf(", keepalive %g s", p.KeepaliveS)
		}
		firewall := p.Firewall
		if p.NAT {
			firewall += ", NAT44 in front of the client"
		}
		fmt.Fprintf(w, "  %s: firewall %s, %s: flows from client %d/%d, from server %d/%d; drops %d | %d, probes %d | %d, paths opened %d | %d, reorder events %d | %d",
			r.Mode, firewall, how, p.FromClient.Completed, p.FromClient.Attempted, p.FromServer.Completed, p.FromServer.Attempted,
			p.Checks.FirewallDrops, p.Mode.FirewallDrops, p.Checks.ProbesSent, p.Mode.ProbesSent,
			p.Checks.PathsOpened, p.Mode.PathsOpened, p.Checks.ReorderEvents, p.Mode.ReorderEvents)
		if p.PairsOut >= 0 {
			fmt.Fprintf(w, "; outer pairs client->server %d, server->client %d", p.PairsOut, p.PairsIn)
		}
		fmt.Fprintln(w)
		if i := p.Idle; i != nil {
			outcome := "a segment each way got through"
			if !i.Completed {
				outcome = "FAILED: " + i.Error
			}
			fmt.Fprintf(w, "  %s: idle %.0f s, then %s, %d retransmitted segments\n", r.Mode, i.IdleS, outcome, i.Retransmits)
		}
	}
}
