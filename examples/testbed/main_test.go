package main

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the testbed binary as the
// wire forwarder, which the tests start as `testbed.test wire -a IF -b IF`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "wire" {
		os.Exit(wireMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Qdisc != qdiscFQCodel || cfg.RateMbit != 20 || cfg.Duration != 20*time.Second ||
		cfg.InnerFlows != 4 || cfg.OuterFlows != 4 || cfg.VM != "auto" || cfg.Wire != wireBoth {
		t.Errorf("defaults: %+v", cfg)
	}
	if !slices.Equal(cfg.Modes, []string{"direct", "one-flow", "spread", "control"}) {
		t.Errorf("default modes %q", cfg.Modes)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // empty: must parse
		check   func(*config) bool
	}{
		{"cake triple-isolate", []string{"-qdisc", "cake-triple"}, "", func(c *config) bool { return c.Qdisc == qdiscCakeTriple }},
		{"modes in the given order", []string{"-modes", "control,direct"}, "", func(c *config) bool { return slices.Equal(c.Modes, []string{"control", "direct"}) }},
		{"wire on the client side only", []string{"-wire", "client"}, "", func(c *config) bool { return c.Wire == wireClient }},
		{"copying wire", []string{"-wire-kind", "copy"}, "", func(c *config) bool { return c.WireKind == wireCopy }},
		{"hash-clearing wire by default", nil, "", func(c *config) bool { return c.WireKind == wireClearHash && c.LatencyTarget }},
		{"unknown wire kind", []string{"-wire-kind", "fibre"}, "-wire-kind", nil},
		{"latency target reported only", []string{"-require-targets", "-latency-target=false"}, "", func(c *config) bool { return c.RequireTargets && !c.LatencyTarget }},
		{"no outside flows", []string{"-m", "0"}, "", func(c *config) bool { return c.OuterFlows == 0 }},
		{"unknown qdisc", []string{"-qdisc", "sfq"}, "unknown qdisc", nil},
		{"unknown mode", []string{"-modes", "direct,ipsec"}, "unknown mode", nil},
		{"mode twice", []string{"-modes", "direct,direct"}, "listed twice", nil},
		{"too short", []string{"-d", "1s"}, "at least 2s", nil},
		{"no inner flow", []string{"-n", "0"}, "-n 0", nil},
		{"zero rate", []string{"-rate", "0"}, "-rate 0", nil},
		{"bad wire", []string{"-wire", "half"}, "client, both or none", nil},
		{"bad vm", []string{"-vm", "maybe"}, "auto, router, always or never", nil},
		{"router in a VM", []string{"-vm", "router"}, "", func(c *config) bool { return c.VM == "router" }},
		{"stray argument", []string{"direct"}, "unexpected argument", nil},
		{"probe too fast", []string{"-probe", "100us"}, "at least 1ms", nil},
		{"idle probes by default", nil, "", func(c *config) bool { return c.Idle == 3*time.Second }},
		{"idle probes off", []string{"-idle", "0"}, "", func(c *config) bool { return c.Idle == 0 }},
		{"idle probes too short", []string{"-idle", "500ms"}, "-idle 500ms", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Errorf("config %+v", cfg)
			}
		})
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	var stderr strings.Builder
	if code := run([]string{"-qdisc", "sfq"}, io.Discard, &stderr); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "unknown qdisc") {
		t.Errorf("stderr %q does not say why", stderr.String())
	}
}

func TestMissingToolsNamesPackages(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // nothing is installed there
	cfg, _ := parseFlags(nil, io.Discard)
	missing := missingTools(cfg)
	joined := strings.Join(missing, ", ")
	for _, want := range []string{"iperf3 (package iperf3)", "irtt (package irtt)", "wg (package wireguard-tools)", "tc (package iproute2)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing %q lacks %q", joined, want)
		}
	}
	cfg.Modes = []string{"direct"}
	if slices.ContainsFunc(missingTools(cfg), func(s string) bool { return strings.HasPrefix(s, "wg ") }) {
		t.Error("wg is asked for without the control mode")
	}
}

func TestWireStatsDelays(t *testing.T) {
	var s wireStats
	s.Delays = make([]uint64, delayBuckets)
	for _, ns := range []int64{500, 3_000, 3_500, 900_000} { // 0.5 µs, 3 µs, 3.5 µs, 900 µs
		s.Delays[delayBucket(ns)]++
	}
	if got := s.DelayPercentile(50); got != 0.004 {
		t.Errorf("median bound %v ms, want 0.004", got)
	}
	if got := s.DelayPercentile(99); got != 1.024 {
		t.Errorf("p99 bound %v ms, want 1.024", got)
	}
	if got := delayBucket(100 * 1e9); got != delayBuckets-1 {
		t.Errorf("100 s lands in bucket %d, want the last", got)
	}
	earlier := wireStats{AToBFrames: 1, Delays: make([]uint64, delayBuckets)}
	earlier.Delays[delayBucket(3_000)] = 1
	s.AToBFrames = 5
	d := s.since(earlier)
	if d.AToBFrames != 4 || d.Delays[delayBucket(3_000)] != 1 || s.Delays[delayBucket(3_000)] != 2 {
		t.Errorf("since: %+v (and the original changed: %v)", d, s.Delays)
	}
}
