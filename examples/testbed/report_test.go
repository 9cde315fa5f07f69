package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testConfig() *config {
	return &config{Qdisc: qdiscFQCodel, RateMbit: 20, Duration: 20 * time.Second, Omit: 2 * time.Second,
		InnerFlows: 4, OuterFlows: 4, ProbeInterval: 10 * time.Millisecond, Modes: modeNames(), Wire: wireClient}
}

// measuredRow builds a row with the given goodputs (inside, then
// outside) and probe round-trip times.
func measuredRow(name string, inner, outer []float64, innerRTT, outerRTT []float64) modeResult {
	r := modeResult{Mode: name}
	for i, g := range inner {
		r.Flows = append(r.Flows, flowResult{Name: fmt.Sprintf("inner-%d", i+1), Path: "inner", GoodputMbit: g})
	}
	for i, g := range outer {
		r.Flows = append(r.Flows, flowResult{Name: fmt.Sprintf("outer-%d", i+1), Path: "outer", GoodputMbit: g})
	}
	r.InnerProbe = newProbeSummary(probeResult{RTTms: innerRTT})
	r.OuterProbe = newProbeSummary(probeResult{RTTms: outerRTT})
	r.Wire = []wireStats{{A: "wc", B: "wrc", AToBFrames: 30000, BToAFrames: 15000, Delays: []uint64{0, 100, 900}}}
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
		cfg        func(*config)
		row        modeResult
		status     string
		share      float64
		reason     string // substring of a reason, if any
		note       string // substring of a note, if any
		targetsMet bool
	}{
		{
			name: "direct, fair", mode: "direct",
			row:    measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), fast, fast),
			status: statusOK, share: 0.5, targetsMet: true,
		},
		{
			name: "control squeezed proves the wire", mode: "control",
			row:    measuredRow("control", repeat(0.9, 4), repeat(3.6, 4), slow, fast),
			status: statusOK, share: 0.2, note: "wire proven",
		},
		{
			name: "control isolated: the wire leaks", mode: "control",
			row:    measuredRow("control", repeat(2.25, 4), repeat(2.4, 4), fast, fast),
			status: statusInvalid, share: 2.25 / 4.65, reason: "leaks the flow hash", targetsMet: true,
		},
		{
			name: "link not filled", mode: "direct",
			row:    measuredRow("direct", repeat(1, 4), repeat(1, 4), fast, fast),
			status: statusInvalid, share: 0.5, reason: "could not keep up", targetsMet: true,
		},
		{
			name: "control through a FIFO proves nothing", mode: "control",
			cfg:    func(c *config) { c.Qdisc = qdiscFIFO },
			row:    measuredRow("control", repeat(2.25, 4), repeat(2.4, 4), slow, slow),
			status: statusOK, share: 2.25 / 4.65, note: "cannot prove the wire", targetsMet: true,
		},
		{
			name: "control with one inner flow proves nothing", mode: "control",
			cfg:    func(c *config) { c.InnerFlows = 1 },
			row:    measuredRow("control", repeat(3.8, 1), repeat(3.8, 4), fast, fast),
			status: statusOK, share: 0.2, note: "cannot prove the wire", targetsMet: true,
		},
		{
			name: "control with the link not filled proves nothing", mode: "control",
			row:    measuredRow("control", repeat(1.5, 4), repeat(1.5, 4), slow, fast),
			status: statusInvalid, share: 0.5, reason: "could not keep up", note: "cannot prove the wire",
		},
		{
			name: "probe without replies", mode: "direct",
			row:    measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), nil, fast),
			status: statusInvalid, share: 0.5, reason: "inner latency probe got no reply",
		},
		{
			name: "outer probe in a bulk flow's queue proves nothing", mode: "spread",
			row: func() modeResult {
				r := measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), fast, nil)
				r.OuterProbe = newProbeSummary(probeResult{RTTms: slow, Lost: 3})
				return r
			}(),
			status: statusOK, share: 0.5, note: "shared the router's queue", targetsMet: false,
		},
		{
			name: "spread misses the latency target", mode: "spread",
			row:    measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), slow, fast),
			status: statusOK, share: 0.5, targetsMet: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(cfg)
			}
			m, _ := findMode(tc.mode)
			r := tc.row
			r.measure(cfg, m)
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
	m, _ := findMode("spread")
	inner := []float64{5, 6, 7, 8, 16}
	outer := []float64{3, 3, 4, 5, 11}
	r := measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), inner, outer)
	innerIdle := newProbeSummary(probeResult{RTTms: []float64{3.4, 3.5, 3.6}})
	outerIdle := newProbeSummary(probeResult{RTTms: []float64{1.2, 1.3, 1.4}})
	r.InnerIdle, r.OuterIdle = &innerIdle, &outerIdle
	r.measure(cfg, m)
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

	rep := &report{Config: reportConfig{Qdisc: "fq_codel", RateMbit: 20, InnerFlows: 4, OuterFlows: 4}, Modes: []modeResult{r}}
	var b bytes.Buffer
	rep.writeTable(&b)
	for _, want := range []string{"3.5 / 1.3", "the tunnel itself added 2.2 ms"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}

	// Without idle probes, the gaps are unknown, not zero.
	r = measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), inner, outer)
	r.measure(cfg, m)
	if !math.IsNaN(float64(r.Targets.IdleGapMs)) || !math.IsNaN(float64(r.Targets.LoadP99GapMs)) {
		t.Errorf("no idle probes: idle gap %v, load gap %v; want NaN", r.Targets.IdleGapMs, r.Targets.LoadP99GapMs)
	}
}

func TestMeasureWireLoss(t *testing.T) {
	cfg := testConfig()
	m, _ := findMode("direct")
	r := measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), []float64{1}, []float64{1})
	r.Wire[0].KernelDrops = 1000 // of 45000 frames
	r.measure(cfg, m)
	if r.Status != statusInvalid || !strings.Contains(strings.Join(r.Reasons, ""), "lost 1000 of 46000 frames") {
		t.Errorf("status %q, reasons %q; want invalid for the wire's losses", r.Status, r.Reasons)
	}
	if float64(r.WireDelayP99Ms) != 0.004 {
		t.Errorf("wire delay p99 %v ms, want 0.004 (the 2-4 µs bucket)", r.WireDelayP99Ms)
	}
}

func TestJudgeLeakInvalidatesEveryRow(t *testing.T) {
	cfg := testConfig()
	direct := measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), []float64{1}, []float64{1})
	direct.measure(cfg, modes[0])
	control := measuredRow("control", repeat(2.25, 4), repeat(2.4, 4), []float64{1}, []float64{1})
	controlMode, _ := findMode("control")
	control.measure(cfg, controlMode)
	rep := &report{Modes: []modeResult{direct, {Mode: "one-flow", Status: statusSkipped}, control}}
	rep.judge()
	if rep.Valid {
		t.Error("a run whose wire leaks is valid")
	}
	if rep.Modes[0].Status != statusInvalid {
		t.Errorf("direct row is %q, want invalid", rep.Modes[0].Status)
	}
	if rep.Modes[1].Status != statusSkipped {
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
		{"all ok", []string{statusOK, statusOK}, true},
		{"skipped rows do not count", []string{statusOK, statusSkipped}, true},
		{"a failed row", []string{statusOK, statusFailed}, false},
		{"an invalid row", []string{statusInvalid, statusOK}, false},
		{"nothing ran", []string{statusSkipped}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &report{}
			for i, s := range tc.statuses {
				rep.Modes = append(rep.Modes, modeResult{Mode: modes[i].Name, Status: s})
			}
			rep.judge()
			if rep.Valid != tc.valid {
				t.Errorf("valid %v, want %v", rep.Valid, tc.valid)
			}
		})
	}
}

func sampleReport() *report {
	cfg := testConfig()
	direct := measuredRow("direct", repeat(2.35, 4), repeat(2.35, 4), []float64{0.8, 1, 1.2}, []float64{0.9, 1, 1.1})
	direct.measure(cfg, modes[0])
	direct.Qdisc = &qdiscStats{Device: "rs", Kind: "fq_codel", MaxFlows: 10}
	controlMode, _ := findMode("control")
	control := measuredRow("control", repeat(0.9, 4), repeat(3.6, 4), []float64{20, 30, 40}, []float64{1, 1.2, 1.3})
	control.measure(cfg, controlMode)
	control.Qdisc = &qdiscStats{Device: "rs", Kind: "fq_codel", MaxFlows: 6}
	rep := &report{Config: newReportConfig(cfg, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
		Modes: []modeResult{direct, {Mode: "one-flow", Status: statusSkipped, Reasons: []string{"no flowtun binary"}}, control}}
	rep.judge()
	return rep
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	sampleReport().writeTable(&b)
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
	rep.Modes[0].OuterProbe = newProbeSummary(probeResult{Lost: 3})
	path := filepath.Join(t.TempDir(), "results.json")
	if err := rep.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := readReport(path)
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
	met := targets{P99GapMs: 1, Met: true, LatencyMet: true, JainMet: true}
	slow := targets{P99GapMs: 5, JainMet: true}
	unfair := targets{P99GapMs: 1, LatencyMet: true}
	config := reportConfig{InnerFlows: 4, OuterFlows: 4} // one flow's share 0.2, fair 0.5
	tests := []struct {
		name    string
		rows    []modeResult
		latency bool
		want    string // a part of the answer; "" for none
	}{
		{"no spread row", []modeResult{{Mode: "direct", Status: statusOK}}, true, ""},
		{"spread skipped", []modeResult{{Mode: "spread", Status: statusSkipped}}, true, ""},
		{"spread met", []modeResult{{Mode: "spread", Status: statusOK, Targets: met}}, true, ""},
		{"spread too slow", []modeResult{{Mode: "spread", Status: statusOK, Jain: 0.99, Targets: slow}}, true, "inner probe p99 5.0 ms above"},
		{"spread too slow, latency not required", []modeResult{{Mode: "spread", Status: statusOK, Jain: 0.99, Targets: slow}}, false, ""},
		{"spread unfair, latency not required", []modeResult{{Mode: "spread", Status: statusOK, Jain: 0.9, Targets: unfair}}, false, "Jain 0.900"},
		{"spread invalid", []modeResult{{Mode: "spread", Status: statusInvalid, Targets: met}}, true, "was invalid"},
		{"one-flow squeezed", []modeResult{{Mode: "one-flow", Status: statusOK, TunnelShare: 0.24, ExpectedShare: 0.2}}, true, ""},
		{"one-flow not squeezed", []modeResult{{Mode: "one-flow", Status: statusOK, TunnelShare: 0.4, ExpectedShare: 0.2}}, true, "one-flow mode was not squeezed"},
		{"one-flow invalid", []modeResult{{Mode: "one-flow", Status: statusInvalid, TunnelShare: 0.5, ExpectedShare: 0.2}}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := (&report{Config: config, Modes: tt.rows}).missedTargets(tt.latency)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("missedTargets(%v) = %q, want %q", tt.latency, got, tt.want)
			}
		})
	}
}

func TestFlowtunCounters(t *testing.T) {
	raw := `{"tun_packets":10,"dropped_auth":2,"dropped_replay":1,"send_errors":3,"conn":{"Sent":10,"SentPerAddress":[0,1,2]}}`
	trimmed := trimCounters([]byte(raw))
	if strings.Contains(string(trimmed), "SentPerAddress") || !strings.Contains(string(trimmed), `"Sent":10`) {
		t.Errorf("trimCounters = %s, want the per-address counts gone and the rest kept", trimmed)
	}
	dropped, auth := flowtunDrops(map[string]json.RawMessage{"client": trimmed, "server": json.RawMessage(`{"dropped_malformed":4}`)})
	if dropped != 10 || auth != 2 {
		t.Errorf("flowtunDrops = %d, %d; want 10, 2", dropped, auth)
	}
}
