// Package shaping puts the bottleneck's queueing discipline on a router's
// interface (fq_codel or a FIFO under HTB, or cake) and reads its
// statistics back from tc's JSON.
package shaping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/flowspread/flowspread/internal/netns"
)

// Kind is the queueing discipline at the router's bottleneck.
type Kind string

const (
	// FQCodel is fq_codel (RFC 8290) under an HTB shaper: 1024 flow
	// queues chosen by a hash of the outer 5-tuple (or, for IPv6 with a
	// flow label, of addresses, label and protocol), CoDel on each.
	FQCodel Kind = "fq_codel"
	// CakeFlows is cake shaping by itself, isolating flows only.
	CakeFlows Kind = "cake-flows"
	// CakeTriple is cake in triple-isolate mode: fair first between
	// hosts (by full 128-bit address) on each side, then between flows.
	// A sender that spreads over N source addresses counts as N hosts.
	CakeTriple Kind = "cake-triple"
	// CakeDualSrcHost is cake in dual-srchost mode: fair first between
	// source hosts (by full address), then between each host's flows.
	// On the router's egress towards the server it isolates the client's
	// senders from one another: a tunnel that spreads over N source
	// addresses counts as N senders there, one that spreads over source
	// ports as one. The usual advice for a home router's upload.
	CakeDualSrcHost Kind = "cake-dual-srchost"
	// CakeDualDstHost is cake in dual-dsthost mode: fair first between
	// destination hosts, then between each host's flows. Towards the
	// server it isolates the destinations the client sends to: a tunnel
	// that spreads over N of the server's addresses counts as N of them.
	// The usual advice for a home router's download.
	CakeDualDstHost Kind = "cake-dual-dsthost"
	// FIFO is a plain packet FIFO under HTB: the control with no flow
	// isolation at all. Its 1000 packets are Linux's default queue length.
	FIFO Kind = "fifo"
)

// Kinds are every kind, in the order -qdisc lists them.
var Kinds = []Kind{FQCodel, CakeFlows, CakeTriple, CakeDualSrcHost, CakeDualDstHost, FIFO}

// cakeModes are cake's isolation keywords (tc-cake(8)) for each cake kind.
var cakeModes = map[Kind]string{
	CakeFlows:       "flows",
	CakeTriple:      "triple-isolate",
	CakeDualSrcHost: "dual-srchost",
	CakeDualDstHost: "dual-dsthost",
}

// Cake reports whether the kind is cake, in any isolation mode.
func (k Kind) Cake() bool {
	_, ok := cakeModes[k]
	return ok
}

// HostFair reports whether the kind is fair between hosts (by address)
// before flows: a sender's share then depends on how many addresses it
// uses, not only on how many flows.
func (k Kind) HostFair() bool {
	return k == CakeTriple || k == CakeDualSrcHost || k == CakeDualDstHost
}

// ParseKind returns the kind named s, as -qdisc gives it.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown qdisc %q: want one of %s", s, strings.Join(names, ", "))
}

// KernelQdisc is the kernel's name of the flow-queueing qdisc this kind
// needs, which the host may lack.
func (k Kind) KernelQdisc() string {
	switch {
	case k.Cake():
		return "cake"
	case k == FIFO:
		return "pfifo"
	}
	return "fq_codel"
}

// rateArg formats a rate in Mbit/s as tc wants it, in kbit/s (tc's "kbit"
// is 1000 bit/s).
func rateArg(mbit float64) string {
	return strconv.FormatInt(int64(mbit*1000+0.5), 10) + "kbit"
}

// htbBurst is the HTB bucket in bytes: 25 ms at the rate, at least two
// full frames. tc's default is one timer tick's worth (4 ms with HZ=250),
// and HTB sends no more than that per timer interrupt; in the VM, whose
// emulated timers fire late when the host is busy, the link then carried
// half its rate. Tokens for 25 ms let HTB catch up after a late timer,
// while the queue, and so fq_codel's decisions, stays in the leaf qdisc.
func htbBurst(rateMbit float64) int {
	return max(int(rateMbit*1e6/8*0.025), 2*1514)
}

// SetupCommands returns the tc commands (arguments after "tc") that Shape
// dev to rateMbit with this qdisc, replacing whatever was there. HTB and
// cake count whole frames, Ethernet header included.
func (k Kind) SetupCommands(dev string, rateMbit float64) [][]string {
	rate := rateArg(rateMbit)
	burst := strconv.Itoa(htbBurst(rateMbit))
	htb := [][]string{
		{"qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"},
		{"class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate, "burst", burst, "cburst", burst},
	}
	switch {
	case k.Cake():
		// One tin (besteffort): every load here is best effort anyway,
		// and the statistics stay in one place. No "nat": no NAT stands
		// on the router itself (-nat puts it in front of the client), so
		// the addresses cake sees are the ones it must be fair between.
		return [][]string{{"qdisc", "replace", "dev", dev, "root", "handle", "1:", "cake", "bandwidth", rate, "besteffort", cakeModes[k]}}
	case k == FIFO:
		return append(htb, []string{"qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", "pfifo", "limit", "1000"})
	}
	return append(htb, []string{"qdisc", "replace", "dev", dev, "parent", "1:1", "handle", "10:", "fq_codel"})
}

// Shape puts the qdisc on dev in ns, starting from fresh counters.
// Runner runs commands where the router is: a namespace, or a router VM.
type Runner interface {
	Run(args ...string) error
	Output(args ...string) ([]byte, error)
}

// Shape puts the qdisc on dev where ns is, starting from fresh counters.
func Shape(ns Runner, dev string, kind Kind, rateMbit float64) error {
	// Deleting first resets the statistics, which the report reads per
	// mode; a missing root qdisc is not an error.
	ns.Run("tc", "qdisc", "del", "dev", dev, "root")
	for _, args := range kind.SetupCommands(dev, rateMbit) {
		if err := ns.Run(append([]string{"tc"}, args...)...); err != nil {
			return fmt.Errorf("shaping %s with %s: %w", dev, kind, err)
		}
	}
	return nil
}

// Qdisc is one qdisc of `tc -s -j qdisc show`, the fields the report
// uses (iproute2 6.1 names).
type Qdisc struct {
	Dev        string `json:"dev"`
	Kind       string `json:"kind"`
	Handle     string `json:"handle"`
	Parent     string `json:"parent"`
	Root       bool   `json:"root"`
	Bytes      uint64 `json:"bytes"`
	Packets    uint64 `json:"packets"`
	Drops      uint64 `json:"drops"`
	Overlimits uint64 `json:"overlimits"`
	Backlog    uint64 `json:"backlog"`
	Qlen       uint64 `json:"qlen"`

	// fq_codel
	NewFlowCount  uint64 `json:"new_flow_count"`
	EcnMark       uint64 `json:"ecn_mark"`
	DropOverlimit uint64 `json:"drop_overlimit"`
	NewFlowsLen   uint64 `json:"new_flows_len"`
	OldFlowsLen   uint64 `json:"old_flows_len"`

	// cake
	Tins []struct {
		SentPackets       uint64 `json:"sent_packets"`
		Drops             uint64 `json:"drops"`
		EcnMark           uint64 `json:"ecn_mark"`
		PeakDelayUs       uint64 `json:"peak_delay_us"`
		AvgDelayUs        uint64 `json:"avg_delay_us"`
		SparseFlows       uint64 `json:"sparse_flows"`
		BulkFlows         uint64 `json:"bulk_flows"`
		UnresponsiveFlows uint64 `json:"unresponsive_flows"`
		WayCollisions     uint64 `json:"way_collisions"`
	} `json:"tins"`
}

// Stats is what the report says about the bottleneck qdisc during
// one mode. Flow counts come from samples taken while the load ran:
// fq_codel and cake only report the flows queued at the moment of the
// sample, so the most seen at once is the best view of how many flows the
// qdisc told apart.
type Stats struct {
	Device        string `json:"device"`
	Kind          string `json:"kind"`
	Packets       uint64 `json:"packets"`
	Bytes         uint64 `json:"bytes"`
	Drops         uint64 `json:"drops"`
	ECNMarks      uint64 `json:"ecn_marks"`
	NewFlowCount  uint64 `json:"new_flow_count,omitempty"` // fq_codel: times a queue became active
	MaxFlows      uint64 `json:"max_active_flows"`         // most flows queued at once over the samples
	MaxBulkFlows  uint64 `json:"max_bulk_flows,omitempty"` // cake
	PeakDelayUs   uint64 `json:"peak_delay_us,omitempty"`  // cake
	WayCollisions uint64 `json:"way_collisions,omitempty"` // cake: flows that shared a queue
	Samples       int    `json:"samples"`

	lastFlows uint64 // flows queued at the latest sample, for progress
}

// parseTc reads `tc -s -j qdisc show dev X` output.
func parseTc(data []byte) ([]Qdisc, error) {
	var qs []Qdisc
	if err := json.Unmarshal(data, &qs); err != nil {
		return nil, fmt.Errorf("tc JSON: %w", err)
	}
	return qs, nil
}

// Leaf returns the qdisc of dev that queues the packets: the one inside
// HTB, or the root when it shapes by itself (cake).
func Leaf(qs []Qdisc, dev string) (Qdisc, bool) {
	for _, q := range qs {
		if q.Dev == dev && q.Kind != "htb" && q.Kind != "ingress" && q.Kind != "clsact" {
			return q, true
		}
	}
	return Qdisc{}, false
}

// Add folds one sample into s: counters take the latest value, flow
// counts the largest.
func (s *Stats) Add(q Qdisc) {
	s.Samples++
	s.Kind = q.Kind
	s.Packets, s.Bytes, s.Drops = q.Packets, q.Bytes, q.Drops
	flows := q.NewFlowsLen + q.OldFlowsLen
	s.ECNMarks, s.NewFlowCount = q.EcnMark, q.NewFlowCount
	var bulk, ecn, collisions uint64
	for _, t := range q.Tins {
		flows += t.SparseFlows + t.BulkFlows + t.UnresponsiveFlows
		bulk += t.BulkFlows
		ecn += t.EcnMark
		collisions += t.WayCollisions
		s.PeakDelayUs = max(s.PeakDelayUs, t.PeakDelayUs)
	}
	if len(q.Tins) > 0 {
		s.ECNMarks, s.WayCollisions = ecn, collisions
	}
	s.lastFlows = flows
	s.MaxFlows = max(s.MaxFlows, flows)
	s.MaxBulkFlows = max(s.MaxBulkFlows, bulk)
}

// LastFlows is how many flows were queued at the latest sample.
func (s *Stats) LastFlows() uint64 { return s.lastFlows }

// Sample reads the statistics of every qdisc where the router is
// with one tc process (under emulation each process start costs a tenth
// of a second of CPU, taken from the experiment).
func Sample(router Runner) ([]Qdisc, error) {
	if ns, ok := router.(netns.Namespace); ok {
		// tc -netns spares the ip netns exec process.
		cmd := exec.Command("tc", "-netns", string(ns), "-s", "-j", "qdisc", "show")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("tc -s qdisc show in %s: %w: %s", ns, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return parseTc(out)
	}
	out, err := router.Output("tc", "-s", "-j", "qdisc", "show")
	if err != nil {
		return nil, err
	}
	return parseTc(out)
}
