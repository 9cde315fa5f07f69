package main

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
)

func TestParseFlagsVPN(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string // empty: must parse
		vpn     string
		bin     string // the -wgspread path
	}{
		{"flowtun by default", nil, "", vpnFlowtun, ""},
		{"flowtun", []string{"-vpn", "flowtun"}, "", vpnFlowtun, ""},
		{"wireguard", []string{"-vpn", "wireguard"}, "", vpnWireGuard, ""},
		{"wireguard with a built wgspread", []string{"-vpn", "wireguard", "-wgspread", "/opt/wgspread"}, "", vpnWireGuard, "/opt/wgspread"},
		{"unknown VPN", []string{"-vpn", "ipsec"}, "-vpn \"ipsec\": want flowtun or wireguard", "", ""},
		{"VPN names are exact", []string{"-vpn", "WireGuard"}, "want flowtun or wireguard", "", ""},
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
			if cfg.VPN != tc.vpn || cfg.Wgspread != tc.bin {
				t.Errorf("VPN %q, wgspread %q; want %q, %q", cfg.VPN, cfg.Wgspread, tc.vpn, tc.bin)
			}
		})
	}
}

func TestTunnelProgram(t *testing.T) {
	for _, tc := range []struct {
		vpn     string
		wantPkg string
		field   func(*config) string // the path tunnelProgram must hand back
	}{
		{vpnFlowtun, tunnel.FlowtunPackage, func(c *config) string { return c.Flowtun }},
		{vpnWireGuard, tunnel.WgspreadPackage, func(c *config) string { return c.Wgspread }},
	} {
		t.Run(tc.vpn, func(t *testing.T) {
			cfg := &config{VPN: tc.vpn, Flowtun: "flowtun-path", Wgspread: "wgspread-path"}
			pkg, bin := tunnelProgram(cfg)
			if pkg != tc.wantPkg || *bin != tc.field(cfg) {
				t.Errorf("package %q, binary %q; want %q, %q", pkg, *bin, tc.wantPkg, tc.field(cfg))
			}
			*bin = "built"
			if tc.field(cfg) != "built" {
				t.Errorf("setting the returned binary left the config's path at %q", tc.field(cfg))
			}
		})
	}
}

func TestNewTunnelProgram(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "tunnel")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cfg     config
		spread  bool
		wantErr string
		check   func(tunnel.Tunnel) bool
	}{
		{"flowtun one flow", config{VPN: vpnFlowtun, Flowtun: bin}, false, "",
			func(tun tunnel.Tunnel) bool { f, ok := tun.(*tunnel.Flowtun); return ok && !f.Spread }},
		{"wireguard stock bind", config{VPN: vpnWireGuard, Wgspread: bin}, false, "",
			func(tun tunnel.Tunnel) bool { w, ok := tun.(*tunnel.Wgspread); return ok && !w.Spread && w.Bin == bin }},
		{"wireguard spread", config{VPN: vpnWireGuard, Wgspread: bin}, true, "",
			func(tun tunnel.Tunnel) bool { w, ok := tun.(*tunnel.Wgspread); return ok && w.Spread }},
		{"wireguard ignores -flowtun", config{VPN: vpnWireGuard, Flowtun: bin}, true, "no wgspread binary", nil},
		{"wireguard binary missing", config{VPN: vpnWireGuard, Wgspread: bin + ".gone"}, true, "wgspread binary", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tun, err := newTunnelProgram(&tc.cfg, tc.spread)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(tun) {
				t.Errorf("tunnel %#v", tun)
			}
		})
	}
}

func TestModeDescriptionsNameTheVPN(t *testing.T) {
	for _, tc := range []struct {
		mode, vpn, dimension, want string
	}{
		{"one-flow", vpnFlowtun, "", "flowtun"},
		{"spread", vpnFlowtun, "", "flowtun"},
		{"spread", vpnFlowtun, "addresses", "own outer address pair"},
		{"spread", vpnFlowtun, "ports", "own outer source port"},
		{"spread", vpnFlowtun, "both", "address pair and source port"},
		{"one-flow", vpnFlowtun, "ports", "without spreading"},
		{"one-flow", vpnWireGuard, "", "wgspread -stock-bind"},
		{"spread", vpnWireGuard, "", "WireGuard (wgspread)"},
		{"control", vpnWireGuard, "", "kernel WireGuard"},
		{"direct", vpnWireGuard, "", "no tunnel"},
	} {
		t.Run(tc.mode+" "+tc.vpn+" "+tc.dimension, func(t *testing.T) {
			m, ok := findMode(tc.mode)
			if !ok {
				t.Fatalf("no mode %q", tc.mode)
			}
			if got := m.describe(&config{VPN: tc.vpn, Dimension: tc.dimension}); !strings.Contains(got, tc.want) {
				t.Errorf("description %q lacks %q", got, tc.want)
			}
		})
	}
}

func TestMissingToolsWireGuardVPN(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // nothing is installed there
	asksForWg := func(cfg *config) bool {
		return slices.ContainsFunc(missingTools(cfg), func(s string) bool { return strings.HasPrefix(s, "wg ") })
	}
	for _, tc := range []struct {
		name  string
		vpn   string
		modes []string
		want  bool
	}{
		{"wireguard spread", vpnWireGuard, []string{"spread"}, true},
		{"wireguard one flow", vpnWireGuard, []string{"direct", "one-flow"}, true},
		{"wireguard without its modes", vpnWireGuard, []string{"direct"}, false},
		{"flowtun spread", vpnFlowtun, []string{"spread"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := asksForWg(&config{VPN: tc.vpn, Modes: tc.modes}); got != tc.want {
				t.Errorf("asks for wg: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRunInVMPassesWgspread runs runInVM with a stand-in for scripts/vm
// that records its arguments and the shared directory: the wgspread
// binary must travel into the directory the VM shares and be named to
// the testbed inside.
func TestRunInVMPassesWgspread(t *testing.T) {
	dir := t.TempDir()
	runner := filepath.Join(dir, "vm")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > runner-args\nls -a > runner-files\n"
	if err := os.WriteFile(runner, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "wgspread")
	if err := os.WriteFile(bin, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cfg, err := parseFlags([]string{"-vpn", "wireguard", "-wgspread", bin, "-vm-runner", runner, "-out", out}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := runInVM(cfg, []string{"-vpn", "wireguard"}, io.Discard, io.Discard); code != 0 || err != nil {
		t.Fatalf("runInVM: status %d, %v", code, err)
	}
	args, err := os.ReadFile(filepath.Join(out, "runner-args"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadFile(filepath.Join(out, "runner-files"))
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for line := range strings.Lines(string(args)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "-wgspread=./"); ok {
			name = v
		}
	}
	if name == "" {
		t.Fatalf("the VM's testbed gets no -wgspread: arguments\n%s", args)
	}
	if !slices.Contains(strings.Fields(string(files)), name) {
		t.Errorf("%s was not in the shared directory while the VM ran: %s", name, files)
	}
	if !strings.Contains(string(args), "-vpn\nwireguard\n") {
		t.Errorf("the VM's testbed does not get -vpn wireguard: arguments\n%s", args)
	}
	if _, err := os.Stat(filepath.Join(out, name)); !os.IsNotExist(err) {
		t.Errorf("the copy %s is left in the output directory: %v", name, err)
	}
}

// TestWireGuardInVM runs the one-flow and spread modes with -vpn wireguard
// in the VM: wgspread built on the host, carried into the VM, configured
// with wg at both ends. Like TestExperimentInVM it boots a VM, so it runs
// only when FLOWSPREAD_VM_EXPERIMENT=1.
func TestWireGuardInVM(t *testing.T) {
	rep, table, stderr := runTestbedInVM(t, &config{VPN: vpnWireGuard, Modes: []string{"spread"}},
		"boots a VM: set FLOWSPREAD_VM_EXPERIMENT=1 to run it",
		"-vpn", "wireguard", "-modes", "one-flow,spread")
	if rep.Config.VPN != vpnWireGuard || !strings.Contains(table, "VPN wireguard") {
		t.Errorf("the report does not say WireGuard ran: config VPN %q\n%s", rep.Config.VPN, table)
	}
	if len(rep.Modes) != 2 {
		t.Fatalf("%d modes in the report, want 2\n%s\n%s", len(rep.Modes), table, stderr)
	}
	oneFlow, spread := rep.Modes[0], rep.Modes[1]
	for _, r := range rep.Modes {
		if r.Status != report.StatusOK && r.Status != report.StatusInvalid {
			t.Fatalf("mode %s: %s: %q\n%s", r.Mode, r.Status, r.Reasons, table)
		}
		if !strings.Contains(r.Description, "wgspread") {
			t.Errorf("mode %s: description %q does not name wgspread", r.Mode, r.Description)
		}
		if r.InnerProbe.Samples == 0 {
			t.Errorf("mode %s: the probe inside WireGuard got no replies", r.Mode)
		}
	}
	if float64(oneFlow.TotalMbit) < report.MinShareOfRate*rep.Config.RateMbit || float64(spread.TotalMbit) < report.MinShareOfRate*rep.Config.RateMbit {
		t.Skipf("the machine was too busy to fill the %g Mbit/s link (one-flow %.1f, spread %.1f Mbit/s): the shares prove nothing\n%s",
			rep.Config.RateMbit, float64(oneFlow.TotalMbit), float64(spread.TotalMbit), table)
	}
	// Isolated, the 4 inner flows get 0.5 of the goodput; as one outer
	// flow, about one flow's share, 0.2.
	if share := float64(spread.TunnelShare); share < 0.35 {
		t.Errorf("spreading WireGuard's flows got %.2f of the goodput, want near 0.5: the router did not isolate them\n%s", share, table)
	}
	if oneFlow.TunnelShare >= spread.TunnelShare {
		t.Errorf("the stock bind's one outer flow got %.2f of the goodput, spreading %.2f: spreading gained nothing\n%s",
			float64(oneFlow.TunnelShare), float64(spread.TunnelShare), table)
	}
}
