package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
)

// probeAt returns a probe of n answered samples every interval from
// start, each with rtt.
func probeAt(start time.Time, n int, interval, rtt time.Duration) load.Probe {
	var p load.Probe
	for i := range n {
		p.Samples = append(p.Samples, verdict.Sample{Sent: start.Add(time.Duration(i) * interval), RTT: rtt})
		p.RTTms = append(p.RTTms, float64(rtt)/float64(time.Millisecond))
	}
	return p
}

// TestRoundsCutTheMode: each round gets its window of the bulk flows'
// measured time, its own probes, and its slice of the idle probes; the
// last window runs to the end of the load.
func TestRoundsCutTheMode(t *testing.T) {
	cfg := testConfig()
	cfg.Duration, cfg.Rounds = 10*time.Second, 3
	t0 := time.Unix(1_700_000_000, 0)
	m := &measured{
		idleInner: probeAt(t0, 300, 10*time.Millisecond, time.Millisecond),
		idleOuter: probeAt(t0, 300, 10*time.Millisecond, time.Millisecond),
	}
	for i := range 3 {
		start := t0.Add(5*time.Second + time.Duration(i)*3*time.Second)
		m.inner = append(m.inner, probeAt(start, 270, 10*time.Millisecond, time.Duration(i+1)*time.Millisecond))
		m.outer = append(m.outer, probeAt(start, 270, 10*time.Millisecond, time.Millisecond))
	}
	rounds := m.rounds(cfg)
	if len(rounds) != 3 {
		t.Fatalf("%d rounds, want 3", len(rounds))
	}
	wantWindows := [][2]time.Duration{{0, 3 * time.Second}, {3 * time.Second, 6 * time.Second}, {6 * time.Second, 10 * time.Second}}
	idle := 0
	for i, r := range rounds {
		if r.From != wantWindows[i][0] || r.To != wantWindows[i][1] {
			t.Errorf("round %d: window %v to %v, want %v to %v", i, r.From, r.To, wantWindows[i][0], wantWindows[i][1])
		}
		if len(r.Probes.Inner) != 270 || r.Probes.Inner[0].RTT != time.Duration(i+1)*time.Millisecond {
			t.Errorf("round %d: %d inner samples, the first %v; want its own 270", i, len(r.Probes.Inner), r.Probes.Inner[0].RTT)
		}
		if n := len(r.Probes.IdleInner); n < 99 || n > 101 || len(r.Probes.IdleOuter) != n {
			t.Errorf("round %d: %d idle inner and %d idle outer samples, want a third of 300 each", i, n, len(r.Probes.IdleOuter))
		}
		idle += len(r.Probes.IdleInner)
	}
	if idle != 300 {
		t.Errorf("the rounds hold %d idle samples of 300", idle)
	}
	inner, outer := m.whole()
	if len(inner.Samples) != 810 || len(outer.RTTms) != 810 {
		t.Errorf("whole probes of %d and %d samples, want 810", len(inner.Samples), len(outer.RTTms))
	}
}

func TestRoundsFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		rounds  int
		wantErr string
	}{
		{nil, 3, ""},
		{[]string{"-rounds", "1"}, 1, ""},
		{[]string{"-d", "5s", "-rounds", "2"}, 2, ""},
		{[]string{"-rounds", "0"}, 0, "-rounds 0"},
		{[]string{"-d", "3s", "-rounds", "3"}, 0, "at least 4s"},
	} {
		cfg, err := parseFlags(tc.args, &bytes.Buffer{})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one saying %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || cfg.Rounds != tc.rounds {
			t.Errorf("%q: rounds %v, %v; want %d", tc.args, cfg, err, tc.rounds)
		}
	}
}

// TestExitStatus: a run's exit status tells a real miss (1) from a host
// too busy to judge the latency (3), which only -require-targets asks.
func TestExitStatus(t *testing.T) {
	spread := func(latency string) report.ModeResult {
		return report.ModeResult{Mode: "spread", Status: report.StatusOK, Jain: 0.99,
			Targets: report.Targets{JainMet: true, LatencyMet: latency == "met", Met: latency == "met", Latency: latency},
			Verdict: &report.Verdict{Status: latency, Advice: "close other work and rerun"}}
	}
	for _, tc := range []struct {
		name    string
		rep     report.Report
		require bool
		want    int
		say     string
	}{
		{"met", report.Report{Valid: true, Modes: []report.ModeResult{spread("met")}}, true, exitMet, ""},
		{"not met", report.Report{Valid: true, Modes: []report.ModeResult{spread("not met")}}, true, exitNotMet, "missed its targets"},
		{"inconclusive", report.Report{Valid: true, Modes: []report.ModeResult{spread("inconclusive")}}, true, exitInconclusive,
			"inconclusive: the host was too busy"},
		{"inconclusive, targets not required", report.Report{Valid: true, Modes: []report.ModeResult{spread("inconclusive")}}, false, exitMet, ""},
		{"invalid", report.Report{Modes: []report.ModeResult{spread("met")}}, true, exitNotMet, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.RequireTargets = tc.require
			var stderr bytes.Buffer
			if got := exitStatus(&tc.rep, cfg, &stderr); got != tc.want {
				t.Errorf("exit status %d, want %d (%s)", got, tc.want, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.say) || tc.say == "" && stderr.Len() > 0 {
				t.Errorf("says %q, want %q", stderr.String(), tc.say)
			}
			if tc.want == exitInconclusive && !strings.Contains(stderr.String(), "close other work and rerun") {
				t.Errorf("an inconclusive run does not say what to do: %q", stderr.String())
			}
		})
	}
}
