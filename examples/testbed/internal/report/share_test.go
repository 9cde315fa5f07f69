package report

import (
	"bytes"
	"strings"
	"testing"
)

func TestHostShare(t *testing.T) {
	direct := ModeResult{Mode: "direct", Status: StatusOK, TunnelShare: 0.50}
	spread := func(share number) ModeResult {
		return ModeResult{Mode: "spread", Status: StatusOK, TunnelShare: share, Jain: 0.99, Dimension: "addresses",
			Targets: Targets{Met: true, LatencyMet: true, JainMet: true, Latency: "met"}}
	}
	for _, tc := range []struct {
		name      string
		qdisc     string
		rows      []ModeResult
		wantCheck bool   // the spread row has a share check
		wantMet   bool   // and it is met
		wantMiss  string // part of Missed's answer; "" for none
	}{
		{"the issue's figure at cake-triple", "cake-triple", []ModeResult{direct, spread(0.76)}, true, false, "tunnel share 0.76, the same flows with no tunnel 0.50 (at most 0.55"},
		{"within the slack", "cake-dual-srchost", []ModeResult{direct, spread(0.54)}, true, true, ""},
		{"on the limit", "cake-dual-dsthost", []ModeResult{direct, spread(0.55)}, true, true, ""},
		{"cake without direct", "cake-triple", []ModeResult{spread(0.50)}, false, false, "run -modes direct,spread"},
		{"cake with direct failed", "cake-triple", []ModeResult{{Mode: "direct", Status: StatusFailed}, spread(0.50)}, false, false, "did not run"},
		{"fq_codel is not judged", "fq_codel", []ModeResult{direct, spread(0.76)}, false, false, ""},
		{"cake without spread", "cake-triple", []ModeResult{direct}, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := &Report{Config: Config{Qdisc: tc.qdisc, InnerFlows: 4, OuterFlows: 4}, Modes: tc.rows}
			rep.Validate()
			s := rep.row("spread")
			if got := s != nil && s.HostShare != nil; got != tc.wantCheck {
				t.Fatalf("share check present %v, want %v", got, tc.wantCheck)
			}
			if tc.wantCheck && s.HostShare.Met != tc.wantMet {
				t.Errorf("share check met %v, want %v: %+v", s.HostShare.Met, tc.wantMet, *s.HostShare)
			}
			miss, inconclusive := rep.Missed(true)
			if tc.wantMiss == "" && miss != "" || !strings.Contains(miss, tc.wantMiss) || inconclusive {
				t.Errorf("Missed = %q (inconclusive %v), want %q", miss, inconclusive, tc.wantMiss)
			}
		})
	}
}

func TestHostShareInTable(t *testing.T) {
	rep := &Report{Config: Config{Qdisc: "cake-triple", InnerFlows: 4, OuterFlows: 4, RateMbit: 20}, Modes: []ModeResult{
		{Mode: "direct", Status: StatusOK, TunnelShare: 0.5},
		{Mode: "spread", Status: StatusOK, TunnelShare: 0.76, Dimension: "addresses"},
	}}
	rep.Validate()
	var b bytes.Buffer
	rep.WriteTable(&b)
	for _, want := range []string{
		"spread (addresses)  ok",
		"spread (addresses): host share within direct + 0.05 NOT met: tunnel share 0.76, direct mode's 0.50 (at most 0.55)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestHeadingNamesTheTopology(t *testing.T) {
	zero := 0.0
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{Qdisc: "fq_codel", RateMbit: 20}, "fq_codel at 20 Mbit/s, 0 bulk flows"},
		{Config{Qdisc: "fq_codel", RateMbit: 20, Outer: "ipv4", NAT: true}, "fq_codel at 20 Mbit/s, outer IPv4, the client behind a NAT44, 0 bulk"},
		{Config{Qdisc: "fq_codel", RateMbit: 20, OnLink: true}, "the client on-link (proxy NDP, the kernel's proxy_delay), 0 bulk"},
		{Config{Qdisc: "fq_codel", RateMbit: 20, OnLink: true, ProxyDelayS: &zero}, "the client on-link (proxy NDP, proxy_delay 0 s), 0 bulk"},
	} {
		var b bytes.Buffer
		(&Report{Config: tc.c}).writeHeading(&b)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("heading %q lacks %q", b.String(), tc.want)
		}
	}
}
