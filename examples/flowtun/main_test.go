package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/hash"
)

// TestMain checks that no test leaves a goroutine behind: a closed tunnel
// must end both of its loops.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testPSKHex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"

func TestParseFlags(t *testing.T) {
	pskFile := filepath.Join(t.TempDir(), "psk")
	if err := os.WriteFile(pskFile, []byte(testPSKHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const testHashKeyHex = "000102030405060708090a0b0c0d0e0f"
	testHashKey := hash.Key{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	hashKeyFile := filepath.Join(t.TempDir(), "hash-key")
	if err := os.WriteFile(hashKeyFile, []byte(testHashKeyHex+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noPSK := []string{"-peer", "[2001:db8:ff::b]:51820"}
	base := []string{"-peer", "[2001:db8:ff::b]:51820", "-psk", testPSKHex}
	pfx := []string{"-prefix", "2001:db8:a::/64", "-peer-prefix", "2001:db8:b::/64"}
	with := func(extra ...[]string) []string {
		args := append([]string{}, base...)
		for _, e := range extra {
			args = append(args, e...)
		}
		return args
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, cfg config, stats string)
		wantErr string
	}{
		{name: "defaults", args: base, check: func(t *testing.T, cfg config, stats string) {
			if cfg.name != "tun0" || cfg.listenPort != 51820 || cfg.mtu != 1420 || cfg.batch != 32 || !cfg.ours.IsZero() {
				t.Errorf("defaults: %+v", cfg)
			}
			if !cfg.symmetric || !cfg.localRoute || !cfg.gso || cfg.flowLabel {
				t.Errorf("default switches: %+v", cfg)
			}
			if cfg.spread != spreadOff || stats != "-" {
				t.Errorf("spread %v, stats %q", cfg.spread, stats)
			}
			if cfg.psk != testPSK {
				t.Error("PSK not parsed")
			}
			if want, _ := hashKeyFromPSK(testPSK); cfg.hashKey != want {
				t.Error("the default hash key is not the one derived from the PSK")
			}
		}},
		{name: "auto spreads both", args: with(pfx), check: func(t *testing.T, cfg config, _ string) {
			if cfg.spread != spreadBoth || cfg.ours.String() != "prefix=2001:db8:a::/64,bits=10" || cfg.theirs.String() != "prefix=2001:db8:b::/64,bits=10" {
				t.Errorf("spread %v, ranges %v %v", cfg.spread, cfg.ours, cfg.theirs)
			}
		}},
		{name: "ports on IPv4", args: with([]string{"-peer", "192.0.2.1:51820", "-range", "ports=40000-40063", "-peer-range", "nat-ports=16"}), check: func(t *testing.T, cfg config, _ string) {
			c := cfg.connConfig()
			want := conn.Range{Ports: conn.PortRange{First: 40000, Bits: 6}}
			if cfg.spread != spreadBoth || c.Range != want || c.Peers[0].Range != (conn.Range{Ports: conn.PortRange{Bits: 4, Translated: true}}) {
				t.Errorf("spread %v, conn ranges %v and %v; want both, %v and nat-ports=16", cfg.spread, c.Range, c.Peers[0].Range, want)
			}
		}},
		{name: "auto with our prefix only", args: with([]string{"-prefix", "2001:db8:a::/64"}), check: func(t *testing.T, cfg config, _ string) {
			if cfg.spread != spreadSrc {
				t.Errorf("spread %v, want src", cfg.spread)
			}
		}},
		{name: "auto with the peer's prefix only", args: with([]string{"-peer-prefix", "2001:db8:b::/64"}), check: func(t *testing.T, cfg config, _ string) {
			if cfg.spread != spreadDst {
				t.Errorf("spread %v, want dst", cfg.spread)
			}
		}},
		{name: "off despite prefixes", args: with(pfx, []string{"-spread", "off"}), check: func(t *testing.T, cfg config, _ string) {
			c := cfg.connConfig()
			if cfg.spread != spreadOff || c.Range.Prefix.IsValid() || c.Peers[0].Range.Prefix.IsValid() {
				t.Errorf("off: spread %v, conn prefix %v, peer prefix %v", cfg.spread, c.Range.Prefix, c.Peers[0].Range.Prefix)
			}
		}},
		{name: "src leaves the peer unspread", args: with(pfx, []string{"-spread", "src"}), check: func(t *testing.T, cfg config, _ string) {
			c := cfg.connConfig()
			if c.Range.Prefix.String() != "2001:db8:a::/64" || c.Peers[0].Range.Prefix.IsValid() {
				t.Errorf("src: conn prefix %v, peer prefix %v", c.Range.Prefix, c.Peers[0].Range.Prefix)
			}
		}},
		{name: "addresses and routes, repeated and comma-separated",
			args: with([]string{"-addr", "198.51.100.1/24,fd00:99::1/64", "-addr", "198.51.100.9/32", "-route", "203.0.113.0/24"}),
			check: func(t *testing.T, cfg config, _ string) {
				want := []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("fd00:99::1/64"), netip.MustParsePrefix("198.51.100.9/32")}
				if len(cfg.addrs) != 3 || cfg.addrs[0] != want[0] || cfg.addrs[1] != want[1] || cfg.addrs[2] != want[2] {
					t.Errorf("addrs %v, want %v", cfg.addrs, want)
				}
				if len(cfg.routes) != 1 || cfg.routes[0] != netip.MustParsePrefix("203.0.113.0/24") {
					t.Errorf("routes %v", cfg.routes)
				}
			}},
		{name: "hash key given", args: with([]string{"-hash-key", "000102030405060708090a0b0c0d0e0f", "-symmetric=false"}),
			check: func(t *testing.T, cfg config, _ string) {
				if cfg.hashKey != (hash.Key{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}) || cfg.symmetric {
					t.Errorf("hash key %x, symmetric %v", cfg.hashKey[:], cfg.symmetric)
				}
			}},
		{name: "PSK from a file", args: []string{"-peer", "192.0.2.2:51820", "-psk-file", pskFile},
			check: func(t *testing.T, cfg config, _ string) {
				if cfg.psk != testPSK {
					t.Error("PSK from the file differs")
				}
			}},
		{name: "self given", args: with([]string{"-self", "[2001:db8:ff::a]:51820"}), check: func(t *testing.T, cfg config, _ string) {
			if cfg.self != netip.MustParseAddrPort("[2001:db8:ff::a]:51820") {
				t.Errorf("self %v", cfg.self)
			}
		}},
		{name: "PSK from the environment", args: noPSK, env: map[string]string{pskEnv: testPSKHex + "\n"},
			check: func(t *testing.T, cfg config, _ string) {
				if cfg.psk != testPSK {
					t.Error("PSK from the environment differs")
				}
			}},
		{name: "hash key from a file", args: with([]string{"-hash-key-file", hashKeyFile}), check: func(t *testing.T, cfg config, _ string) {
			if cfg.hashKey != testHashKey {
				t.Errorf("hash key %x", cfg.hashKey[:])
			}
		}},
		{name: "hash key from the environment", args: base, env: map[string]string{hashKeyEnv: testHashKeyHex},
			check: func(t *testing.T, cfg config, _ string) {
				if cfg.hashKey != testHashKey {
					t.Errorf("hash key %x", cfg.hashKey[:])
				}
			}},
		{name: "an empty variable is unset", args: base, env: map[string]string{pskEnv: "", hashKeyEnv: ""},
			check: func(t *testing.T, cfg config, _ string) {
				if want, _ := hashKeyFromPSK(testPSK); cfg.psk != testPSK || cfg.hashKey != want {
					t.Error("an empty variable changed a key")
				}
			}},
		{name: "no peer", args: []string{"-psk", testPSKHex}, wantErr: "-peer is required"},
		{name: "no PSK", args: noPSK, wantErr: "-psk-file or $FLOWTUN_PSK is required"},
		{name: "PSK as flag and file", args: with([]string{"-psk-file", pskFile}), wantErr: "the PSK is given 2 ways (-psk, -psk-file)"},
		{name: "PSK as flag and variable", args: base, env: map[string]string{pskEnv: testPSKHex},
			wantErr: "the PSK is given 2 ways (-psk, $FLOWTUN_PSK)"},
		{name: "PSK as file and variable", args: append(noPSK, "-psk-file", pskFile), env: map[string]string{pskEnv: testPSKHex},
			wantErr: "the PSK is given 2 ways (-psk-file, $FLOWTUN_PSK)"},
		{name: "hash key as flag and file", args: with([]string{"-hash-key", testHashKeyHex, "-hash-key-file", hashKeyFile}),
			wantErr: "the hash key is given 2 ways (-hash-key, -hash-key-file)"},
		{name: "hash key three ways", args: with([]string{"-hash-key", testHashKeyHex, "-hash-key-file", hashKeyFile}),
			env: map[string]string{hashKeyEnv: testHashKeyHex}, wantErr: "the hash key is given 3 ways"},
		{name: "hash key file missing", args: with([]string{"-hash-key-file", hashKeyFile + ".missing"}), wantErr: "-hash-key-file"},
		{name: "bad hash key in the environment", args: base, env: map[string]string{hashKeyEnv: "00"}, wantErr: "$FLOWTUN_HASH_KEY"},
		{name: "bad PSK in a file", args: append(noPSK, "-psk-file", hashKeyFile), wantErr: "-psk-file " + hashKeyFile},
		{name: "self is the peer", args: with([]string{"-self", "[2001:db8:ff::b]:51820"}), wantErr: "-self and -peer are both"},
		{name: "self is the peer, IPv4-mapped", args: []string{"-peer", "192.0.2.2:51820", "-self", "[::ffff:192.0.2.2]:51820", "-psk", testPSKHex},
			wantErr: "-self and -peer are both"},
		{name: "short PSK", args: []string{"-peer", "192.0.2.2:51820", "-psk", "0102"}, wantErr: "want 64 hex digits"},
		{name: "PSK not hex", args: []string{"-peer", "192.0.2.2:51820", "-psk", strings.Repeat("zz", 32)}, wantErr: "-psk"},
		{name: "bad hash key", args: with([]string{"-hash-key", "00"}), wantErr: "-hash-key"},
		{name: "peer without port", args: []string{"-peer", "2001:db8::1", "-psk", testPSKHex}, wantErr: "-peer"},
		{name: "port zero", args: with([]string{"-listen-port", "0"}), wantErr: "-listen-port"},
		{name: "src without prefix", args: with([]string{"-spread", "src"}), wantErr: "needs -range (or -prefix)"},
		{name: "both without the peer's prefix", args: with([]string{"-spread", "both", "-prefix", "2001:db8:a::/64"}), wantErr: "needs -peer-range (or -peer-prefix)"},
		{name: "unknown spread", args: with([]string{"-spread", "some"}), wantErr: "-spread"},
		{name: "bad prefix", args: with([]string{"-prefix", "2001:db8:a::"}), wantErr: "-prefix"},
		{name: "bad addr", args: with([]string{"-addr", "198.51.100.1"}), wantErr: "-addr"},
		{name: "MTU too small for IPv6", args: with([]string{"-mtu", "1200", "-addr", "fd00:99::1/64"}), wantErr: "below 1280"},
		{name: "MTU too large", args: with([]string{"-mtu", "70000"}), wantErr: "-mtu"},
		{name: "small MTU for IPv4 only", args: with([]string{"-mtu", "1200", "-addr", "198.51.100.1/24"}), check: func(t *testing.T, cfg config, _ string) {
			if cfg.mtu != 1200 {
				t.Errorf("mtu %d", cfg.mtu)
			}
		}},
		{name: "batch zero", args: with([]string{"-batch", "0"}), wantErr: "-batch"},
		{name: "paths learned, probes on, no keepalive by default", args: with(pfx), check: func(t *testing.T, cfg config, _ string) {
			c := cfg.connConfig()
			if c.Peers[0].Open || !c.Probe || cfg.keepalive != 0 {
				t.Errorf("peer open %v, probe %v, keepalive %v; want false, true, 0", c.Peers[0].Open, c.Probe, cfg.keepalive)
			}
		}},
		{name: "open", args: with(pfx, []string{"-open"}), check: func(t *testing.T, cfg config, _ string) {
			if c := cfg.connConfig(); !c.Peers[0].Open {
				t.Error("-open did not declare the peer open")
			}
		}},
		{name: "open without the peer's range", args: with([]string{"-prefix", "2001:db8:a::/64", "-open"}), wantErr: "-open declares the peer's range open, but we do not send to it (-spread src)"},
		{name: "open with translated ports", args: with([]string{"-peer-range", "nat-ports=16", "-open"}), wantErr: "a NAT rewrites its ports"},
		{name: "prefix twice", args: with([]string{"-prefix", "2001:db8:a::/64", "-range", "prefix=2001:db8:c::/64"}), wantErr: "-prefix 2001:db8:a::/64 and -range prefix=2001:db8:c::/64 both give a prefix"},
		{name: "bad range", args: with([]string{"-range", "ports=1-3"}), wantErr: "the count must be a power of two"},
		{name: "keepalive", args: with([]string{"-keepalive", "25s"}), check: func(t *testing.T, cfg config, _ string) {
			if cfg.keepalive != 25*time.Second {
				t.Errorf("keepalive %v, want 25s", cfg.keepalive)
			}
		}},
		{name: "keepalive negative", args: with([]string{"-keepalive", "-1s"}), wantErr: "-keepalive -1s"},
		{name: "keepalive below a second", args: with([]string{"-keepalive", "10ms"}), wantErr: "-keepalive 10ms: give at least 1s"},
		{name: "keepalive not a duration", args: with([]string{"-keepalive", "25"}), wantErr: "-keepalive"},
		// A server with one address: no -prefix, the client's prefix as
		// -peer-prefix; it answers each flow on the pair it came on.
		{name: "server without a prefix", args: with([]string{"-peer-prefix", "2001:db8:a::/64"}), check: func(t *testing.T, cfg config, _ string) {
			c := cfg.connConfig()
			if cfg.spread != spreadDst || c.Range.Prefix.IsValid() || c.Peers[0].Range.Prefix.String() != "2001:db8:a::/64" || c.Peers[0].Open {
				t.Errorf("spread %v, our prefix %v, peer %+v", cfg.spread, c.Range.Prefix, c.Peers[0])
			}
		}},
		{name: "stray argument", args: with([]string{"extra"}), wantErr: "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(pskEnv, "")
			t.Setenv(hashKeyEnv, "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stderr bytes.Buffer
			cfg, stats, err := parseFlags(tc.args, &stderr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.wantErr) {
					t.Fatalf("error %v (output %q), want one saying %q", err, stderr.String(), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			tc.check(t, cfg, stats)
		})
	}
}

// TestRunBadFlags checks that bad command lines fail with status 2 and a
// message, without touching the host.
func TestRunBadFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"-peer", "[2001:db8::1]:51820"}, &stderr); code != 2 {
		t.Errorf("no PSK: exit status %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "-psk") {
		t.Errorf("no PSK: the message does not say what is missing: %q", stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"-h"}, &stderr); code != 0 || !strings.Contains(stderr.String(), "-spread") {
		t.Errorf("-h: exit status %d, usage %q", code, stderr.String())
	}
}

func TestWriteStats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.json")
	for _, n := range []uint64{1, 2} {
		if err := writeStats(path, Stats{Sent: n}, nil); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := `"sent":` + string(rune('0'+n)) + `,`; !strings.Contains(string(b), want) {
			t.Errorf("stats file %s does not contain %s", b, want)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	var stderr bytes.Buffer
	if err := writeStats("-", Stats{DroppedAuth: 3}, &stderr); err != nil || !strings.Contains(stderr.String(), `"dropped_auth":3`) {
		t.Errorf("stats to stderr: %v, %q", err, stderr.String())
	}
}

// TestPSKText checks the PSK's text form, which -psk, -psk-file and
// $FLOWTUN_PSK all parse: 64 hex digits in, the same digits out.
func TestPSKText(t *testing.T) {
	var k pskText
	if err := k.UnmarshalText([]byte(strings.ToUpper(testPSKHex))); err != nil || [PSKSize]byte(k) != testPSK {
		t.Fatalf("UnmarshalText: %v, key %x", err, k)
	}
	if text, err := k.MarshalText(); err != nil || string(text) != testPSKHex {
		t.Errorf("MarshalText = %q, %v; want %s", text, err, testPSKHex)
	}
	for _, tt := range []struct{ in, errHas string }{
		{"", "has 0 characters, want 64 hex digits"},
		{testPSKHex + "00", "has 66 characters"},
		{strings.Repeat("zz", 32), "invalid byte"},
	} {
		if err := k.UnmarshalText([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.errHas) {
			t.Errorf("UnmarshalText(%q): error %v, want one saying %q", tt.in, err, tt.errHas)
		}
	}
}

// TestHelpShowsNoZeroKey checks that -help gives the keys no default: a
// zero key printed as one would read as a key to use.
func TestHelpShowsNoZeroKey(t *testing.T) {
	var help bytes.Buffer
	if _, _, err := parseFlags([]string{"-help"}, &help); err == nil {
		t.Fatal("-help: no flag.ErrHelp")
	}
	if !strings.Contains(help.String(), "-hash-key key") || strings.Contains(help.String(), "default 0000") {
		t.Errorf("-help lists a zero key as a default, or no -hash-key:\n%s", help.String())
	}
}
