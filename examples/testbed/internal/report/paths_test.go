package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/examples/testbed/internal/firewall"
)

// spreadRow is a spread row that met everything, with paths p.
func spreadRow(p *Paths) ModeResult {
	r := measuredRow("spread", repeat(2.3, 4), repeat(2.3, 4), []float64{1, 1.1, 1.2}, []float64{1, 1.1, 1.2})
	r.Paths = p
	r.Measure(testConfig(), kinds["spread"], nil, testTargets)
	return r
}

func TestPathsThatMustReach(t *testing.T) {
	all := Reach{Attempted: 6, Completed: 6}
	blackholed := Reach{Attempted: 6, Completed: 1, Failed: []string{"ping id 2001: none of 3 echoes answered"}}
	for _, tc := range []struct {
		name    string
		p       Paths
		invalid string // a reason the row must give; empty: ok
	}{
		{"all through", Paths{Firewall: "client", MustReach: true, FromClient: all, FromServer: all}, ""},
		{"server's flows lost", Paths{Firewall: "client", MustReach: true, FromClient: all, FromServer: blackholed},
			"5 of 6 flows opened from the server through the tunnel did not get through (ping id 2001"},
		// -open behind a firewall: the lost flows are what the run shows.
		{"-open behind a firewall", Paths{Firewall: "client", Open: true, FromClient: all, FromServer: blackholed}, ""},
		{"idle check failed", Paths{Firewall: "both", MustReach: true, FromClient: all, FromServer: all,
			Idle: &IdleCheck{IdleS: 35, Error: "after 35s idle: i/o timeout"}}, "left idle 35 s did not carry a segment each way after it: after 35s idle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := spreadRow(&tc.p)
			reasons := strings.Join(r.Reasons, "; ")
			if tc.invalid == "" {
				if r.Status != StatusOK {
					t.Errorf("status %q (%s), want ok", r.Status, reasons)
				}
				return
			}
			if r.Status != StatusInvalid || !strings.Contains(reasons, tc.invalid) {
				t.Errorf("status %q, reasons %q; want invalid saying %q", r.Status, reasons, tc.invalid)
			}
		})
	}
}

func TestWritePaths(t *testing.T) {
	rep := &Report{Config: testConfig()}
	rep.Config.Firewall = "client"
	rep.Config.Conntrack = &firewall.Timeouts{Unreplied: 30, Stream: 120}
	rep.Modes = []ModeResult{spreadRow(&Paths{Firewall: "client", Tunnel: "flowtun", KeepaliveS: 25, MustReach: true,
		FromClient: Reach{6, 6, nil}, FromServer: Reach{6, 5, []string{"tcp: i/o timeout"}},
		Checks:   PathCounters{FirewallDrops: 6, ProbesSent: 18, PathsOpened: 24, ReorderEvents: 1},
		Mode:     PathCounters{FirewallDrops: 7, ProbesSent: 22, PathsOpened: 32, ReorderEvents: 3},
		PairsOut: 17, PairsIn: 16, Idle: &IdleCheck{IdleS: 35, Completed: true, Retransmits: 2}})}
	rep.Validate()
	var b bytes.Buffer
	rep.WriteTable(&b)
	out := b.String()
	for _, want := range []string{
		"conntrack UDP timeouts: 30 s unreplied, 120 s stream",
		"spread: firewall client, flowtun waits for each path, keepalive 25 s: flows from client 6/6, from server 5/6; drops 6 | 7, probes 18 | 22, paths opened 24 | 32, reorder events 1 | 3; outer pairs client->server 17, server->client 16",
		"spread: idle 35 s, then a segment each way got through, 2 retransmitted segments",
		"spread: INVALID: 1 of 6 flows opened from the server",
		"result: INVALID",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"firewall":"client"`, `"udp_timeout_s":30`, `"pairs_client_to_server":17`, `"probes_sent":22`, `"retransmits":2`, `"must_reach":true`} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("results.json lacks %s", want)
		}
	}
}

func TestWritePathsBehindNAT(t *testing.T) {
	rep := &Report{Config: testConfig(), Modes: []ModeResult{spreadRow(&Paths{Firewall: "none", NAT: true, Tunnel: "flowtun", KeepaliveS: 25, MustReach: true,
		FromClient: Reach{6, 6, nil}, FromServer: Reach{6, 6, nil}, PairsOut: 17, PairsIn: 18})}}
	rep.Validate()
	var b bytes.Buffer
	rep.WriteTable(&b)
	if want := "spread: firewall none, NAT44 in front of the client, flowtun waits for each path, keepalive 25 s: flows from client 6/6, from server 6/6"; !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}
}
