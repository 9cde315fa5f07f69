package main

import (
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
)

// TestMain lets the test binary stand in for the testbed binary as the
// wire forwarder and the other helpers, which the tests start as
// `testbed.test wire -a IF -b IF` and so on.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		if helper, ok := helpers[os.Args[1]]; ok {
			os.Exit(helper(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Qdisc != shaping.FQCodel || cfg.RateMbit != 20 || cfg.Duration != 20*time.Second ||
		cfg.InnerFlows != 4 || cfg.OuterFlows != 4 || cfg.VM != "auto" || cfg.Wire != network.WireBoth {
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
		{"cake triple-isolate", []string{"-qdisc", "cake-triple"}, "", func(c *config) bool { return c.Qdisc == shaping.CakeTriple }},
		{"cake fair between source hosts", []string{"-qdisc", "cake-dual-srchost"}, "", func(c *config) bool { return c.Qdisc == shaping.CakeDualSrcHost }},
		{"cake fair between destination hosts", []string{"-qdisc", "cake-dual-dsthost"}, "", func(c *config) bool { return c.Qdisc == shaping.CakeDualDstHost }},
		{"IPv4 outer path spreads over ports", []string{"-outer", "ipv4", "-dimension", "ports"}, "", func(c *config) bool { return c.Outer == network.OuterIPv4 && c.Dimension == "ports" }},
		{"IPv4 outer path spreads over ports by default", []string{"-outer", "ipv4"}, "", func(c *config) bool { return c.Dimension == "ports" }},
		{"IPv4 outer path refuses addresses", []string{"-outer", "ipv4", "-dimension", "addresses"}, "only over ports", nil},
		{"NAT behind IPv4", []string{"-outer", "ipv4", "-nat"}, "", func(c *config) bool { return c.NAT && !c.tunnelOpen() && c.keepalive() > 0 }},
		{"NAT needs IPv4", []string{"-nat"}, "needs -outer ipv4", nil},
		{"on-link client", []string{"-onlink"}, "", func(c *config) bool { return c.OnLink && c.Outer == network.OuterIPv6 && c.Dimension == "addresses" }},
		{"on-link proxy delay", []string{"-onlink", "-proxy-delay", "0"}, "", func(c *config) bool { return c.ProxyDelay == 0 && *proxyDelayOf(c) == 0 }},
		{"kernel's proxy delay by default", []string{"-onlink"}, "", func(c *config) bool { return c.ProxyDelay < 0 && proxyDelayOf(c) == nil }},
		{"proxy delay needs on-link", []string{"-proxy-delay", "0"}, "give -onlink", nil},
		{"on-link is IPv6", []string{"-onlink", "-outer", "ipv4", "-dimension", "ports"}, "cannot run with -outer ipv4", nil},
		{"unknown outer family", []string{"-outer", "ipx"}, "want ipv6 or ipv4", nil},
		{"unknown dimension", []string{"-dimension", "labels"}, "want addresses, ports or both", nil},
		{"ports are flowtun's", []string{"-dimension", "ports", "-vpn", "wireguard"}, "flowtun's for now", nil},
		{"wgspread's stock bind through the NAT", []string{"-outer", "ipv4", "-nat", "-vpn", "wireguard", "-modes", "direct,one-flow"}, "", func(c *config) bool { return c.NAT && c.VPN == vpnWireGuard }},
		{"modes in the given order", []string{"-modes", "control,direct"}, "", func(c *config) bool { return slices.Equal(c.Modes, []string{"control", "direct"}) }},
		{"wire on the client side only", []string{"-wire", "client"}, "", func(c *config) bool { return c.Wire == network.WireClient }},
		{"copying wire", []string{"-wire-kind", "copy"}, "", func(c *config) bool { return c.WireKind == network.WireCopy }},
		{"hash-clearing wire by default", nil, "", func(c *config) bool { return c.WireKind == network.WireClearHash && c.LatencyTarget }},
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

// testConfig is the default experiment.
func testConfig() *config {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		panic(err)
	}
	return cfg
}
