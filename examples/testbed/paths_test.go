package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
)

func TestParseFlagsFirewall(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		// What flowtun runs: -open, -keepalive, one server address.
		open      bool
		keepalive time.Duration
		single    bool
	}{
		{"no firewall: today's -open", nil, "", true, 0, false},
		{"client firewall: learn paths, keep alive", []string{"-firewall", "client"}, "", false, 25 * time.Second, false},
		{"both", []string{"-firewall", "both"}, "", false, 25 * time.Second, false},
		{"-open forces it behind a firewall", []string{"-firewall", "client", "-open"}, "", true, 25 * time.Second, false},
		{"server with one address", []string{"-server-prefix=false"}, "", true, 0, true},
		{"unknown firewall", []string{"-firewall", "router"}, `-firewall "router"`, false, 0, false},
		{"wgspread behind a firewall, -open", []string{"-vpn", "wireguard", "-firewall", "client", "-open"}, "", true, 25 * time.Second, false},
		{"one server address is flowtun's", []string{"-vpn", "wireguard", "-server-prefix=false"}, "needs -vpn flowtun", false, 0, false},
		{"idle check needs a tunnel", []string{"-idle-check", "-modes", "direct"}, "-idle-check needs", false, 0, false},
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
			cfg.Flowtun, cfg.Wgspread = tunnelBinary(t), tunnelBinary(t)
			tun, err := newTunnelProgram(cfg, true)
			if err != nil {
				t.Fatal(err)
			}
			switch tun := tun.(type) {
			case *tunnel.Flowtun:
				if tun.Open != tc.open || tun.Keepalive != tc.keepalive || tun.ServerSingle != tc.single {
					t.Errorf("flowtun open %v keepalive %v one server address %v; want %v %v %v", tun.Open, tun.Keepalive, tun.ServerSingle, tc.open, tc.keepalive, tc.single)
				}
			case *tunnel.Wgspread:
				if tun.Open != tc.open || tun.Keepalive != tc.keepalive || tc.single {
					t.Errorf("wgspread open %v keepalive %v; want %v %v, one server address %v", tun.Open, tun.Keepalive, tc.open, tc.keepalive, tc.single)
				}
			default:
				t.Fatalf("tunnel %T", tun)
			}
		})
	}
}

func TestMissingToolsFirewall(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	cfg, _ := parseFlags([]string{"-firewall", "client"}, io.Discard)
	joined := strings.Join(missingTools(cfg), ", ")
	for _, want := range []string{"nft (package nftables)", "ping (package iputils-ping)", "nstat (package iproute2)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing %q lacks %q", joined, want)
		}
	}
}

// tunnelBinary is an empty file that stands for a built tunnel.
func tunnelBinary(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "tunnel")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestVMTestsFirewallFlags parses the flags of scripts/vm-tests' third run.
func TestVMTestsFirewallFlags(t *testing.T) {
	args := strings.Fields("-out x -d 15s -rounds 3 -warmup 2s -plots=false -require-targets -vm-runner scripts/vm -vm auto -modes spread -firewall both -idle-check -latency-target=false")
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Firewall != firewallBoth || !cfg.IdleCheck || cfg.tunnelOpen() || cfg.LatencyTarget {
		t.Errorf("config %+v", cfg)
	}
}
