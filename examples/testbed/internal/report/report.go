// Package report holds what one experiment measured: the rows of its
// modes, the checks that say whether a row means something, the targets
// of the spreading tunnel, and the outputs (results.json, the table for a
// person, the plots). The latency target is judged pairwise by package
// verdict.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/firewall"
	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
)

// Status of a mode's row.
const (
	StatusOK      = "ok"      // measured, and the measurement means what it says
	StatusInvalid = "invalid" // measured, but a check says the result must not be used
	StatusSkipped = "skipped" // not run here (its tunnel is not available)
	StatusFailed  = "failed"  // could not be measured (a tool or the setup failed)
)

// Targets of the spreading tunnel (the acceptance figures).
const (
	// TargetGap bounds the inner probe's p99 beyond the outer's, over
	// the instants both were answered (and, for runs without send times,
	// over all their samples).
	TargetGap      = 2 * time.Millisecond
	targetGapMs    = 2.0
	TargetQuantile = 0.99
	TargetJain     = 0.95 // over all bulk flows
)

// MinShareOfRate is how much of the bottleneck rate the bulk flows must
// carry together for a mode to count: TCP over IPv6 carries about 94% of
// the frame bytes that HTB or cake meter (89% inside WireGuard). Less
// means something else was the bottleneck (the tunnel, the wire, the
// emulated CPU), and then the qdisc under test decided nothing.
const MinShareOfRate = 0.8

// maxWireLoss is the share of frames the wire may fail to pass on.
const maxWireLoss = 0.01

// outerProbeLossNote is the outer probe's loss, in percent, above which a
// flow-queueing row says the probe likely shared a queue with a bulk flow.
// Alone in its queue a sparse probe loses nothing; fq_codel has 1024
// buckets, so with ten flows about one mode in a hundred puts the probe in
// a bulk flow's bucket, and its latencies then say nothing of the tunnel.
const outerProbeLossNote = 2.0

// wireDelayNoteMs is the wire's p99 queueing delay above which the
// report warns that its latencies carry the testbed's own delay.
const wireDelayNoteMs = 5.0

// Report is everything one experiment measured; it is written as JSON.
type Report struct {
	Config Config       `json:"config"`
	Modes  []ModeResult `json:"modes"`
	// Valid is true when every mode that ran is ok and nothing casts
	// doubt on the whole run.
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems,omitempty"`
}

// Config is the experiment's settings and the machine it ran on.
type Config struct {
	Qdisc           string  `json:"qdisc"`
	RateMbit        float64 `json:"rate_mbit"`
	DurationS       float64 `json:"duration_s"`
	OmitS           float64 `json:"warmup_s"`
	InnerFlows      int     `json:"inner_flows"`
	OuterFlows      int     `json:"outer_flows"`
	ProbeIntervalMs float64 `json:"probe_interval_ms"`
	// Rounds is how many rounds each mode's measured time was cut into.
	Rounds   int    `json:"rounds,omitempty"`
	Wire     string `json:"wire"`
	WireKind string `json:"wire_kind"`
	// RouterVM: the router ran in a VM, linked to the hosts by QEMU's
	// network cards, and Wire and WireKind did not apply.
	RouterVM bool   `json:"router_vm,omitempty"`
	VPN      string `json:"vpn,omitempty"` // of the one-flow and spread modes
	Kernel   string `json:"kernel"`
	InVM     bool   `json:"in_vm"`
	// RouterKernel is the router VM's kernel when only the router runs
	// in a VM (then Kernel is the hosts').
	RouterKernel string `json:"router_kernel,omitempty"`
	// Firewall is where stateful firewalls stood (-firewall): none,
	// client or both; Conntrack their UDP timeouts, as the kernel had them.
	Firewall  string             `json:"firewall,omitempty"`
	Conntrack *firewall.Timeouts `json:"conntrack,omitempty"`
	// ServerSingle: the server had one address and no spread prefix
	// (-server-prefix=false).
	ServerSingle bool `json:"server_single_address,omitempty"`
	// Outer is the outer path's family (ipv6, ipv4); NAT: a home router
	// masqueraded the client; OnLink: the client's addresses were on its
	// link's /64, with no route to them.
	Outer  string `json:"outer,omitempty"`
	NAT    bool   `json:"nat,omitempty"`
	OnLink bool   `json:"onlink,omitempty"`
	// ProxyDelayS is the on-link client's proxy_delay when -proxy-delay
	// set it; absent, the kernel's 0.8 s.
	ProxyDelayS *float64 `json:"proxy_delay_s,omitempty"`
	Started     string   `json:"started"`
	ElapsedS    float64  `json:"elapsed_s"`
}

// ModeResult is one row: one mode measured.
type ModeResult struct {
	Mode        string   `json:"mode"`
	Description string   `json:"description"`
	Status      string   `json:"status"`
	Reasons     []string `json:"reasons,omitempty"` // why it is not ok
	Notes       []string `json:"notes,omitempty"`

	Flows     []load.Flow `json:"flows,omitempty"`
	TotalMbit number      `json:"total_mbit"`
	// Jain is Jain's fairness index over all bulk flows, inside and out.
	Jain number `json:"jain"`
	// TunnelShare is the inner flows' part of all bulk goodput.
	TunnelShare number `json:"tunnel_share"`
	// ExpectedShare is TunnelShare if the router is fair to what it can
	// tell apart: one outer flow's part 1/(M+1) for a tunnel it sees as
	// one flow, N/(N+M) otherwise.
	ExpectedShare number `json:"expected_share"`

	InnerProbe ProbeSummary `json:"inner_probe"`
	OuterProbe ProbeSummary `json:"outer_probe"`
	// InnerIdle and OuterIdle are the probes before the load (-idle):
	// each path's own delay with no queue. The difference of their
	// medians is what the tunnel's two ends cost a round trip.
	InnerIdle *ProbeSummary `json:"inner_probe_idle,omitempty"`
	OuterIdle *ProbeSummary `json:"outer_probe_idle,omitempty"`

	Qdisc        *shaping.Stats      `json:"qdisc,omitempty"`         // the router towards the server: the bulk flows' bottleneck
	ReverseQdisc *shaping.Stats      `json:"reverse_qdisc,omitempty"` // the router towards the client: ACKs and probe replies
	Wire         []network.WireStats `json:"wire,omitempty"`
	// WireDelayP99Ms bounds the 99th percentile of the time frames waited
	// for the wire (the worst wire's): what the testbed itself added to
	// the latencies when the machine was short of CPU.
	WireDelayP99Ms number `json:"wire_delay_p99_ms"`
	// TunnelCounters are the tunnel's own counters at the end of the
	// load, by end (client, server), as the tunnel reports them.
	TunnelCounters map[string]json.RawMessage `json:"tunnel_counters,omitempty"`
	// Paths are the reachability checks through the firewalls and the
	// outer address pairs; only for modes with a tunnel.
	Paths   *Paths  `json:"paths,omitempty"`
	Targets Targets `json:"targets"`
	// Rounds are the measured time cut into rounds (-rounds), each with
	// its bulk shares and its latency verdict; Verdict is the latency
	// verdict over all of them.
	Rounds  []RoundResult `json:"rounds,omitempty"`
	Verdict *Verdict      `json:"verdict,omitempty"`
	// Dimension is what the spread mode spread its outer flows over:
	// addresses, ports or both (-dimension); empty for the other modes.
	Dimension string `json:"dimension,omitempty"`
	// HostShare is the spread mode's cake share check against the
	// direct mode (CheckHostShare); nil unless the bottleneck is cake.
	HostShare *HostShare `json:"host_share,omitempty"`
	// Neighbours are the router's neighbour entries on the client link
	// after the mode (-onlink): one per client address it resolved.
	Neighbours *network.Neighbours `json:"router_neighbours,omitempty"`
	ElapsedS   float64             `json:"elapsed_s"`
}

// label names the row in the table: the mode, with the dimension it
// spread over.
func (r ModeResult) label() string {
	if r.Dimension == "" {
		return r.Mode
	}
	return r.Mode + " (" + r.Dimension + ")"
}

// ProbeSummary is one latency probe: the summary and every sample.
type ProbeSummary struct {
	latencySummary
	RTTms []float64 `json:"rtt_ms"`
}

// NewProbeSummary summarizes p.
func NewProbeSummary(p load.Probe) ProbeSummary {
	return ProbeSummary{latencySummary: summarize(p.RTTms, p.Lost), RTTms: p.RTTms}
}

// Targets compares a row with the spreading tunnel's acceptance figures.
type Targets struct {
	P99GapMs number `json:"p99_gap_ms"` // inner probe p99 minus outer probe p99
	// IdleGapMs is the inner probe's idle median minus the outer's: the
	// tunnel's own delay. LoadP99GapMs is P99GapMs less IdleGapMs: how
	// much more the load delayed the inner probe than the outer one.
	// Both are NaN when the idle probes did not run.
	IdleGapMs    number `json:"idle_gap_ms"`
	LoadP99GapMs number `json:"load_p99_gap_ms"`
	Met          bool   `json:"met"` // both of the below
	// LatencyMet: the pairwise verdict is met (without one, the p99 gap
	// is at most the target). JainMet: Jain's index is at least
	// TargetJain.
	LatencyMet bool `json:"latency_met"`
	JainMet    bool `json:"jain_met"`
	// Latency is the latency verdict: met, not met or inconclusive.
	Latency string `json:"latency,omitempty"`
}

// RoundResult is one round of a mode: its bulk shares and its latency
// verdict.
type RoundResult struct {
	TotalMbit   number `json:"total_mbit"`
	Jain        number `json:"jain"`
	TunnelShare number `json:"tunnel_share"`
	Latency     string `json:"latency"` // met, not met, inconclusive
	// Pairs is how many instants both probes were answered; DiffP50Ms
	// the median of the per-instant differences inner minus outer, and
	// GapQMs the inner probe's target quantile less the outer's over the
	// same instants (the figure judged).
	Pairs     int      `json:"pairs"`
	DiffP50Ms number   `json:"diff_p50_ms"`
	GapQMs    number   `json:"gap_q_ms"`
	InnerLoss float64  `json:"inner_loss"`
	OuterLoss float64  `json:"outer_loss"`
	Reasons   []string `json:"reasons,omitempty"`
}

// Verdict is the pairwise latency verdict of a mode over its rounds.
type Verdict struct {
	Status   string  `json:"status"` // met, not met, inconclusive
	Quantile float64 `json:"quantile"`
	GapMs    float64 `json:"gap_ms"` // the target
	// GapQ*Ms are the spread over the rounds of each round's gap at the
	// target quantile.
	GapQMinMs    number   `json:"gap_q_min_ms"`
	GapQMedianMs number   `json:"gap_q_median_ms"`
	GapQMaxMs    number   `json:"gap_q_max_ms"`
	Reasons      []string `json:"reasons,omitempty"`
	Advice       string   `json:"advice,omitempty"`
}

// WriteJSON writes the report to path.
func (rep *Report) WriteJSON(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// Read reads a report written by WriteJSON.
func Read(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rep, nil
}

// WriteOutputs writes results.json, and the plots unless disabled, into
// dir, returning the files written.
func (rep *Report) WriteOutputs(dir string, plots bool) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	files := []string{filepath.Join(dir, "results.json")}
	if err := rep.WriteJSON(files[0]); err != nil {
		return nil, err
	}
	if !plots {
		return files, nil
	}
	cdf := filepath.Join(dir, "latency-cdf.png")
	if err := plotLatencyCDF(rep, cdf); err != nil {
		return files, fmt.Errorf("latency plot: %w", err)
	}
	tput := filepath.Join(dir, "throughput.png")
	if err := plotThroughput(rep, tput); err != nil {
		return append(files, cdf), fmt.Errorf("throughput plot: %w", err)
	}
	return append(files, cdf, tput), nil
}
