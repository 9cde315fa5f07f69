package report

import (
	"bytes"
	"fmt"
	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testConfig() Config {
	return Config{Qdisc: "fq_codel", RateMbit: 20, DurationS: 20, OmitS: 2,
		InnerFlows: 4, OuterFlows: 4, ProbeIntervalMs: 10, Wire: "client", Kernel: "6.1.0-test",
		Started: "2026-01-02T03:04:05Z"}
}

// kinds are what the experiment's modes must show.
var kinds = map[string]Kind{"one-flow": {Squeezed: true}, "control": {Squeezed: true, Control: true}}

// modeNames are the experiment's modes, in order.
var modeNames = []string{"direct", "one-flow", "spread", "control"}

// testTargets are the experiment's latency targets.
var testTargets = verdict.Targets{Gap: TargetGap, Quantile: TargetQuantile, Interval: 10 * time.Millisecond}

// measuredRow builds a row with the given goodputs (inside, then
// outside) and probe round-trip times.
func measuredRow(name string, inner, outer []float64, innerRTT, outerRTT []float64) ModeResult {
	r := ModeResult{Mode: name}
	for i, g := range inner {
		r.Flows = append(r.Flows, load.Flow{Name: fmt.Sprintf("inner-%d", i+1), Path: "inner", GoodputMbit: g})
	}
	for i, g := range outer {
		r.Flows = append(r.Flows, load.Flow{Name: fmt.Sprintf("outer-%d", i+1), Path: "outer", GoodputMbit: g})
	}
	r.InnerProbe = NewProbeSummary(load.Probe{RTTms: innerRTT})
	r.OuterProbe = NewProbeSummary(load.Probe{RTTms: outerRTT})
	r.Wire = []network.WireStats{{A: "wc", B: "wrc", AToBFrames: 30000, BToAFrames: 15000, Delays: []uint64{0, 100, 900}}}
	return r
}

func repeat(v float64, n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = v
	}
	return xs
}

func TestMeasure(t *testing.T) {
	fast := []float64{0.8, 1.0, 1.2, 1.1, 0.9}
	slow := []float64{20, 30, 25, 40, 22}
	for _, tc := range []struct {
		name       string
		mode       string
		cfg        func(*Config)
		row        ModeResult
		status     string
		share      float64
		reason     string // substring of a reason, if any
		note       string // substring of a note, if any
		targetsMet bool
	}{
		{
			name: "direct, fair", mode: "direct",
			row:    measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), fast, fast),
			status: StatusOK, share: 0.5, targetsMet: true,
		},
		{
			name: "control squeezed proves the wire", mode: "control",
			row:    measuredRow("control", repeat(0.9, 4), repeat(3.6, 4), slow, fast),
			status: StatusOK, share: 0.2, note: "wire proven",
		},
		{
			name: "control isolated: the wire leaks", mode: "control",
			row:    measuredRow("control", repeat(2.25, 4), repeat(2.4, 4), fast, fast),
			status: StatusInvalid, share: 2.25 / 4.65, reason: "leaks the flow hash", targetsMet: true,
		},
		{
			name: "link not filled", mode: "direct",
			row:    measuredRow("direct", repeat(1, 4), repeat(1, 4), fast, fast),
			status: StatusInvalid, share: 0.5, reason: "could not keep up", targetsMet: true,
		},
		{
			name: "control through a FIFO proves nothing", mode: "control",
			cfg:    func(c *Config) { c.Qdisc = "fifo" },
			row:    measuredRow("control", repeat(2.25, 4), repeat(2.4, 4), slow, slow),
			status: StatusOK, share: 2.25 / 4.65, note: "cannot prove the wire", targetsMet: true,
		},
		{
			name: "control with one inner flow proves nothing", mode: "control",
			cfg:    func(c *Config) { c.InnerFlows = 1 },
			row:    measuredRow("control", repeat(3.8, 1), repeat(3.8, 4), fast, fast),
			status: StatusOK, share: 0.2, note: "cannot prove the wire", targetsMet: true,
		},
		{
			name: "control with the link not filled proves nothing", mode: "control",
			row:    measuredRow("control", repeat(1.5, 4), repeat(1.5, 4), slow, fast),
			status: StatusInvalid, share: 0.5, reason: "could not keep up", note: "cannot prove the wire",
		},
		{
			name: "probe without replies", mode: "direct",
			row:    measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), nil, fast),
			status: StatusInvalid, share: 0.5, reason: "inner latency probe got no reply",
		},
		{
			name: "outer probe in a bulk flow's queue proves nothing", mode: "spread",
			row: func() ModeResult {
				r := measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), fast, nil)
				r.OuterProbe = NewProbeSummary(load.Probe{RTTms: slow, Lost: 3})
				return r
			}(),
			status: StatusOK, share: 0.5, note: "shared the router's queue", targetsMet: false,
		},
		{
			name: "spread misses the latency target", mode: "spread",
			row:    measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), slow, fast),
			status: StatusOK, share: 0.5, targetsMet: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			r := tc.row
			r.Measure(cfg, kinds[tc.mode], nil, testTargets)
			if r.Status != tc.status {
				t.Errorf("status %q, want %q (reasons %q)", r.Status, tc.status, r.Reasons)
			}
			if math.Abs(float64(r.TunnelShare)-tc.share) > 1e-9 {
				t.Errorf("tunnel share %v, want %v", r.TunnelShare, tc.share)
			}
			if tc.reason != "" && !strings.Contains(strings.Join(r.Reasons, "|"), tc.reason) {
				t.Errorf("reasons %q lack %q", r.Reasons, tc.reason)
			}
			if tc.reason == "" && len(r.Reasons) > 0 {
				t.Errorf("unexpected reasons %q", r.Reasons)
			}
			if tc.note != "" && !strings.Contains(strings.Join(r.Notes, "|"), tc.note) {
				t.Errorf("notes %q lack %q", r.Notes, tc.note)
			}
			if r.Targets.Met != tc.targetsMet {
				t.Errorf("targets met %v, want %v (gap %v ms, Jain %v)", r.Targets.Met, tc.targetsMet, r.Targets.P99GapMs, r.Jain)
			}
		})
	}
}

// TestMeasureIdleGap: the idle probes give the tunnel's own delay, and the
// load's share of the p99 gap is what is left of it.
func TestMeasureIdleGap(t *testing.T) {
	cfg := testConfig()
	inner := []float64{5, 6, 7, 8, 16}
	outer := []float64{3, 3, 4, 5, 11}
	r := measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), inner, outer)
	innerIdle := NewProbeSummary(load.Probe{RTTms: []float64{3.4, 3.5, 3.6}})
	outerIdle := NewProbeSummary(load.Probe{RTTms: []float64{1.2, 1.3, 1.4}})
	r.InnerIdle, r.OuterIdle = &innerIdle, &outerIdle
	r.Measure(cfg, kinds[r.Mode], nil, testTargets)
	gap := float64(r.InnerProbe.P99 - r.OuterProbe.P99)
	if math.Abs(float64(r.Targets.P99GapMs)-gap) > 1e-9 || gap < 4 {
		t.Fatalf("p99 gap %v, want %v (inner p99 %v, outer %v)", r.Targets.P99GapMs, gap, r.InnerProbe.P99, r.OuterProbe.P99)
	}
	if got := float64(r.Targets.IdleGapMs); math.Abs(got-2.2) > 1e-9 {
		t.Errorf("idle gap %v ms, want 3.5-1.3 = 2.2", got)
	}
	if got, want := float64(r.Targets.LoadP99GapMs), gap-2.2; math.Abs(got-want) > 1e-9 {
		t.Errorf("load p99 gap %v ms, want %v", got, want)
	}
	if r.Targets.LatencyMet {
		t.Errorf("latency target met with a %v ms gap; the idle gap must not be taken off it", gap)
	}

	rep := &Report{Config: Config{Qdisc: "fq_codel", RateMbit: 20, InnerFlows: 4, OuterFlows: 4}, Modes: []ModeResult{r}}
	var b bytes.Buffer
	rep.WriteTable(&b)
	for _, want := range []string{"3.5 / 1.3", "the tunnel itself added 2.2 ms"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}

	// Without idle probes, the gaps are unknown, not zero.
	r = measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), inner, outer)
	r.Measure(cfg, kinds[r.Mode], nil, testTargets)
	if !math.IsNaN(float64(r.Targets.IdleGapMs)) || !math.IsNaN(float64(r.Targets.LoadP99GapMs)) {
		t.Errorf("no idle probes: idle gap %v, load gap %v; want NaN", r.Targets.IdleGapMs, r.Targets.LoadP99GapMs)
	}
}

func TestMeasureWireLoss(t *testing.T) {
	cfg := testConfig()
	r := measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), []float64{1}, []float64{1})
	r.Wire[0].KernelDrops = 1000 // of 45000 frames
	r.Measure(cfg, kinds[r.Mode], nil, testTargets)
	if r.Status != StatusInvalid || !strings.Contains(strings.Join(r.Reasons, ""), "lost 1000 of 46000 frames") {
		t.Errorf("status %q, reasons %q; want invalid for the wire's losses", r.Status, r.Reasons)
	}
	if float64(r.WireDelayP99Ms) != 0.004 {
		t.Errorf("wire delay p99 %v ms, want 0.004 (the 2-4 µs bucket)", r.WireDelayP99Ms)
	}
}

func TestJudgeLeakInvalidatesEveryRow(t *testing.T) {
	cfg := testConfig()
	direct := measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), []float64{1}, []float64{1})
	direct.Measure(cfg, kinds["direct"], nil, testTargets)
	control := measuredRow("control", repeat(2.25, 4), repeat(2.4, 4), []float64{1}, []float64{1})
	control.Measure(cfg, kinds["control"], nil, testTargets)
	rep := &Report{Modes: []ModeResult{direct, {Mode: "one-flow", Status: StatusSkipped}, control}}
	rep.Validate()
	if rep.Valid {
		t.Error("a run whose wire leaks is valid")
	}
	if rep.Modes[0].Status != StatusInvalid {
		t.Errorf("direct row is %q, want invalid", rep.Modes[0].Status)
	}
	if rep.Modes[1].Status != StatusSkipped {
		t.Errorf("skipped row became %q", rep.Modes[1].Status)
	}
	if len(rep.Problems) != 1 {
		t.Errorf("problems %q, want one", rep.Problems)
	}
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []string
		valid    bool
	}{
		{"all ok", []string{StatusOK, StatusOK}, true},
		{"skipped rows do not count", []string{StatusOK, StatusSkipped}, true},
		{"a failed row", []string{StatusOK, StatusFailed}, false},
		{"an invalid row", []string{StatusInvalid, StatusOK}, false},
		{"nothing ran", []string{StatusSkipped}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &Report{}
			for i, s := range tc.statuses {
				rep.Modes = append(rep.Modes, ModeResult{Mode: modeNames[i], Status: s})
			}
			rep.Validate()
			if rep.Valid != tc.valid {
				t.Errorf("valid %v, want %v", rep.Valid, tc.valid)
			}
		})
	}
}

func sampleReport() *Report {
	cfg := testConfig()
	direct := measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), []float64{0.8, 1, 1.2}, []float64{0.9, 1, 1.1})
	direct.Measure(cfg, kinds["direct"], nil, testTargets)
	direct.Qdisc = &shaping.Stats{Device: "rs", Kind: "fq_codel", MaxFlows: 10}
	control := measuredRow("control", repeat(0.9, 4), repeat(3.6, 4), []float64{20, 30, 40}, []float64{1, 1.2, 1.3})
	control.Measure(cfg, kinds["control"], nil, testTargets)
	control.Qdisc = &shaping.Stats{Device: "rs", Kind: "fq_codel", MaxFlows: 6}
	rep := &Report{Config: cfg,
		Modes: []ModeResult{direct, {Mode: "one-flow", Status: StatusSkipped, Reasons: []string{"no flowtun binary"}}, control}}
	rep.Validate()
	return rep
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	sampleReport().WriteTable(&b)
	out := b.String()
	for _, want := range []string{
		"fq_codel at 20 Mbit/s, 4 bulk flows inside + 4 outside",
		"direct    ok",
		"one-flow  skipped",
		"0.20 (0.20)",
		"30.0 / 38.0 / 39.8",
		"0.90 0.90 0.90 0.90  |  3.60 3.60 3.60 3.60",
		"one-flow: SKIPPED: no flowtun binary",
		"control: wire proven",
		"result: valid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := sampleReport()
	// A probe with no reply has NaN latencies, which JSON cannot hold.
	rep.Modes[0].OuterProbe = NewProbeSummary(load.Probe{Lost: 3})
	path := filepath.Join(t.TempDir(), "results.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Modes) != 3 || back.Modes[2].Mode != "control" || back.Valid != rep.Valid {
		t.Fatalf("read back %d modes, valid %v", len(back.Modes), back.Valid)
	}
	if got, want := float64(back.Modes[2].TunnelShare), float64(rep.Modes[2].TunnelShare); got != want {
		t.Errorf("tunnel share %v, want %v", got, want)
	}
	if len(back.Modes[2].InnerProbe.RTTms) != 3 || back.Modes[2].InnerProbe.P99 != rep.Modes[2].InnerProbe.P99 {
		t.Errorf("inner probe read back as %+v", back.Modes[2].InnerProbe)
	}
	if !math.IsNaN(float64(back.Modes[0].OuterProbe.Median)) || back.Modes[0].OuterProbe.Lost != 3 {
		t.Errorf("probe without replies read back as %+v", back.Modes[0].OuterProbe.latencySummary)
	}
}

func TestMissedTargets(t *testing.T) {
	met := Targets{P99GapMs: 1, Met: true, LatencyMet: true, JainMet: true}
	slow := Targets{P99GapMs: 5, JainMet: true}
	unfair := Targets{P99GapMs: 1, LatencyMet: true}
	busy := Targets{P99GapMs: 4, JainMet: true, Latency: "inconclusive"}
	busyVerdict := &Verdict{Status: "inconclusive", Reasons: []string{"the idle probes already differ"}, Advice: "close other work and rerun"}
	notSqueezed := ModeResult{Mode: "one-flow", Status: StatusOK, TunnelShare: 0.4, ExpectedShare: 0.2}
	config := Config{InnerFlows: 4, OuterFlows: 4} // one flow's share 0.2, fair 0.5
	tests := []struct {
		name         string
		rows         []ModeResult
		latency      bool
		want         string // a part of the answer; "" for none
		inconclusive bool
	}{
		{"spread inconclusive", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.99, Targets: busy, Verdict: busyVerdict}}, true,
			"inconclusive: the host was too busy to judge the spread mode's latency (the idle probes already differ): close other work and rerun", true},
		{"spread inconclusive, latency not required", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.99, Targets: busy, Verdict: busyVerdict}}, false, "", false},
		{"spread inconclusive but one-flow not squeezed", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.99, Targets: busy}, notSqueezed}, true,
			"one-flow mode was not squeezed", false},
		{"spread inconclusive and unfair", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.9, Targets: Targets{Latency: "inconclusive"}}}, true, "Jain 0.900", false},
		{"spread not met by the verdict", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.99,
			Targets: Targets{P99GapMs: 0.5, JainMet: true, Latency: "not met"},
			Verdict: &Verdict{Status: "not met", Quantile: 0.99, GapMs: 2, GapQMinMs: 3, GapQMedianMs: 4, GapQMaxMs: 5}}}, true,
			"inner probe's 0.99 quantile 4.0 ms above the outer's over the same instants (median round; rounds 3.0 to 5.0; at most 2)", false},
		{"no spread row", []ModeResult{{Mode: "direct", Status: StatusOK}}, true, "", false},
		{"spread skipped", []ModeResult{{Mode: "spread", Status: StatusSkipped}}, true, "", false},
		{"spread met", []ModeResult{{Mode: "spread", Status: StatusOK, Targets: met}}, true, "", false},
		{"spread too slow", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.99, Targets: slow}}, true, "inner probe p99 5.0 ms above", false},
		{"spread too slow, latency not required", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.99, Targets: slow}}, false, "", false},
		{"spread unfair, latency not required", []ModeResult{{Mode: "spread", Status: StatusOK, Jain: 0.9, Targets: unfair}}, false, "Jain 0.900", false},
		{"spread invalid", []ModeResult{{Mode: "spread", Status: StatusInvalid, Targets: met}}, true, "was invalid", false},
		{"one-flow squeezed", []ModeResult{{Mode: "one-flow", Status: StatusOK, TunnelShare: 0.24, ExpectedShare: 0.2}}, true, "", false},
		{"one-flow not squeezed", []ModeResult{notSqueezed}, true, "one-flow mode was not squeezed", false},
		{"one-flow invalid", []ModeResult{{Mode: "one-flow", Status: StatusInvalid, TunnelShare: 0.5, ExpectedShare: 0.2}}, true, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, inconclusive := (&Report{Config: config, Modes: tt.rows}).Missed(tt.latency)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("Missed(%v) = %q, want %q", tt.latency, got, tt.want)
			}
			if inconclusive != tt.inconclusive {
				t.Errorf("Missed(%v): inconclusive %v, want %v", tt.latency, inconclusive, tt.inconclusive)
			}
		})
	}
}

func TestWriteTableNamesTheVPN(t *testing.T) {
	rep := sampleReport()
	rep.Config.VPN = "wireguard"
	var b bytes.Buffer
	rep.WriteTable(&b)
	if want := "fq_codel at 20 Mbit/s, VPN wireguard, 4 bulk flows inside"; !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}
}
