package main

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
)

func TestParseFlags(t *testing.T) {
	const key = "000102030405060708090a0b0c0d0e0f"
	peerB := "[2001:db8:ff::2]:51821=2001:db8:b::/64"
	tests := []struct {
		name    string
		args    []string
		wantErr string // a substring of the error; empty for success
		check   func(t *testing.T, o options)
	}{
		{
			name: "both prefixes and a key",
			args: []string{"-prefix", "2001:db8:a::/64", "-peer-prefix", peerB, "-hash-key", key, "wg0"},
			check: func(t *testing.T, o options) {
				want := []conn.Peer{{Addr: netip.MustParseAddrPort("[2001:db8:ff::2]:51821"), Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64"), Bits: conn.DefaultBits}}}
				if o.iface != "wg0" || o.cfg.Range.Prefix != netip.MustParsePrefix("2001:db8:a::/64") ||
					len(o.cfg.Peers) != 1 || o.cfg.Peers[0] != want[0] {
					t.Errorf("got iface %q prefix %v peers %v", o.iface, o.cfg.Range.Prefix, o.cfg.Peers)
				}
				if !o.cfg.Symmetric || !o.localRoute || o.cfg.Range.Bits != conn.DefaultBits || o.randomKey || o.cfg.Key.String() != key {
					t.Errorf("defaults: symmetric %v local route %v bits %d random key %v", o.cfg.Symmetric, o.localRoute, o.cfg.Range.Bits, o.randomKey)
				}
			},
		},
		{
			name: "two peers, one unspread, prefix host bits masked",
			args: []string{"-prefix", "2001:db8:a::1/64", "-peer-prefix", peerB, "-peer-prefix", "[2001:db8:ff::3]:51820",
				"-bits", "4", "-symmetric=false", "-local-route=false", "wg0"},
			check: func(t *testing.T, o options) {
				if len(o.cfg.Peers) != 2 || o.cfg.Peers[1].Range.Prefix.IsValid() {
					t.Errorf("peers %v: want the second without a prefix", o.cfg.Peers)
				}
				if o.cfg.Peers[0].Range.Bits != 4 || o.cfg.Peers[0].Open {
					t.Errorf("peer %+v: want -bits 4 for its range too, and not open", o.cfg.Peers[0])
				}
				if o.cfg.Range.Prefix != netip.MustParsePrefix("2001:db8:a::/64") || o.cfg.Range.Bits != 4 || o.cfg.Symmetric || o.localRoute {
					t.Errorf("got prefix %v bits %d symmetric %v local route %v", o.cfg.Range.Prefix, o.cfg.Range.Bits, o.cfg.Symmetric, o.localRoute)
				}
				if !o.randomKey {
					t.Error("no -hash-key must mean a random key, and a warning")
				}
			},
		},
		{
			name: "ports over IPv4: -range and a -peer-range behind a NAT, -open not for it",
			args: []string{"-range", "ports=40000-40063", "-peer-range", "198.51.100.9:51820=nat-ports=64",
				"-peer-range", "[2001:db8:ff::3]:51820=prefix=2001:db8:c::/64,ports=41000-41015", "-open", "wg0"},
			check: func(t *testing.T, o options) {
				if want := (conn.Range{Ports: conn.PortRange{First: 40000, Bits: 6}}); o.cfg.Range != want {
					t.Errorf("our range %v, want %v (no prefix, so no bits)", o.cfg.Range, want)
				}
				want := []conn.Peer{
					{Addr: netip.MustParseAddrPort("198.51.100.9:51820"), Range: conn.Range{Ports: conn.PortRange{Bits: 6, Translated: true}}},
					{Addr: netip.MustParseAddrPort("[2001:db8:ff::3]:51820"), Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:c::/64"), Bits: conn.DefaultBits,
						Ports: conn.PortRange{First: 41000, Bits: 4}}, Open: true},
				}
				if !slices.Equal(o.cfg.Peers, want) {
					t.Errorf("peers %+v\nwant  %+v", o.cfg.Peers, want)
				}
			},
		},
		{
			name: "-range with its own bits, -bits for the peer prefix, -prefix shorthand and -peer-range together",
			args: []string{"-range", "prefix=2001:db8:a::/64,bits=6,ports=40000-40003", "-bits", "8",
				"-peer-prefix", peerB, "-peer-range", "192.0.2.7:51820", "wg0"},
			check: func(t *testing.T, o options) {
				if o.cfg.Range.Bits != 6 || o.cfg.Range.Ports.Len() != 4 {
					t.Errorf("our range %v: want its own bits=6 and 4 ports", o.cfg.Range)
				}
				if len(o.cfg.Peers) != 2 || o.cfg.Peers[0].Range.Bits != 8 || !o.cfg.Peers[1].Range.IsZero() {
					t.Errorf("peers %+v: want B's prefix with -bits 8, then an unspread peer", o.cfg.Peers)
				}
			},
		},
		{name: "-prefix and -range both give our prefix", args: []string{"-prefix", "2001:db8:a::/64", "-range", "prefix=2001:db8:1::/64", "-peer-prefix", peerB, "wg0"}, wantErr: "give one"},
		{name: "bad -range", args: []string{"-range", "ports=40000-40002", "-peer-prefix", peerB, "wg0"}, wantErr: "power of two"},
		{name: "bad -peer-range", args: []string{"-peer-range", "192.0.2.7:51820=nat-ports=3", "wg0"}, wantErr: "power-of-two"},
		{name: "IPv4 peer with an address range", args: []string{"-peer-range", "192.0.2.7:51820=prefix=2001:db8:b::/64", "wg0"}, wantErr: "spreading over addresses needs an IPv6 path to the peer"},
		{name: "our ports translated", args: []string{"-range", "nat-ports=16", "-peer-prefix", peerB, "wg0"}, wantErr: "only a peer's ports can be translated"},
		{name: "peer twice, once per flag", args: []string{"-peer-prefix", peerB, "-peer-range", "[2001:db8:ff::2]:51821=ports=40000-40001", "wg0"}, wantErr: "given twice"},
		{name: "IPv4 -prefix names ports", args: []string{"-prefix", "192.0.2.0/24", "-peer-prefix", peerB, "wg0"}, wantErr: "-range ports="},
		{name: "no interface", args: []string{"-peer-prefix", peerB}, wantErr: "exactly one interface"},
		{name: "two interfaces", args: []string{"-peer-prefix", peerB, "wg0", "wg1"}, wantErr: "exactly one interface"},
		{name: "long interface name", args: []string{"-peer-prefix", peerB, "wgspread0123456789"}, wantErr: "at most 15"},
		{name: "no peer", args: []string{"wg0"}, wantErr: "-peer-prefix"},
		{name: "peer twice", args: []string{"-peer-prefix", peerB, "-peer-prefix", peerB, "wg0"}, wantErr: "given twice"},
		{name: "peer without port", args: []string{"-peer-prefix", "2001:db8:ff::2=2001:db8:b::/64", "wg0"}, wantErr: "peer endpoint"},
		{name: "IPv4 peer prefix", args: []string{"-peer-prefix", "[2001:db8:ff::2]:1=192.0.2.0/24", "wg0"}, wantErr: "IPv6"},
		{name: "IPv4 prefix", args: []string{"-prefix", "192.0.2.0/24", "-peer-prefix", peerB, "wg0"}, wantErr: "IPv6"},
		{name: "prefix too small for bits", args: []string{"-prefix", "2001:db8:a::/120", "-peer-prefix", peerB, "wg0"}, wantErr: "fewer than 2^10"},
		{name: "bits out of range", args: []string{"-bits", "33", "-peer-prefix", peerB, "wg0"}, wantErr: "-bits 33"},
		{name: "short hash key", args: []string{"-hash-key", "0011", "-peer-prefix", peerB, "wg0"}, wantErr: "-hash-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// TestRunBadFlags checks the exit status and the message for a bad command
// line, before anything is set up.
func TestRunBadFlags(t *testing.T) {
	var out strings.Builder
	if code := run([]string{"wg0"}, &out); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if !strings.Contains(out.String(), "wgspread: ") || !strings.Contains(out.String(), "-peer-prefix") {
		t.Errorf("message %q does not say what is missing", out.String())
	}
}

// TestHashKeySources checks the three ways to give the hash key: the
// -hash-key flag (visible to every user in /proc/PID/cmdline), a file, and
// the environment; none means a random key, and two are refused.
func TestHashKeySources(t *testing.T) {
	const key = "000102030405060708090a0b0c0d0e0f"
	const env = "WGSPREAD_HASH_KEY" // as -help and the package doc name it
	peer := []string{"-peer-prefix", "[2001:db8:ff::2]:51821=2001:db8:b::/64"}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("key", key+"\n")
	bad := write("bad", "0011\n")
	tests := []struct {
		name    string
		args    []string
		env     string
		wantErr []string // substrings of the error; nil for success with key
	}{
		{name: "flag", args: []string{"-hash-key", key}},
		{name: "file, newline trimmed", args: []string{"-hash-key-file", good}},
		{name: "environment", env: key},
		{name: "flag and file", args: []string{"-hash-key", key, "-hash-key-file", good}, wantErr: []string{"-hash-key,", "-hash-key-file", "one way only"}},
		{name: "file and environment", args: []string{"-hash-key-file", good}, env: key, wantErr: []string{"-hash-key-file", env, "one way only"}},
		{name: "flag and environment", args: []string{"-hash-key", key}, env: key, wantErr: []string{"-hash-key,", env}},
		{name: "missing file", args: []string{"-hash-key-file", filepath.Join(dir, "none")}, wantErr: []string{"-hash-key-file", "no such file"}},
		{name: "short key in file", args: []string{"-hash-key-file", bad}, wantErr: []string{"-hash-key-file"}},
		{name: "short key in environment", env: "0011", wantErr: []string{env}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(env, tt.env)
			o, err := parseFlags(append(append(tt.args, peer...), "wg0"), io.Discard)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; want one saying %q", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.randomKey || o.cfg.Key.String() != key {
				t.Errorf("key %v (random %v), want %s", o.cfg.Key, o.randomKey, key)
			}
		})
	}

	t.Run("none", func(t *testing.T) {
		t.Setenv(env, "")
		o, err := parseFlags(append(peer, "wg0"), io.Discard)
		if err != nil || !o.randomKey {
			t.Errorf("error %v, random key %v; want a random key", err, o.randomKey)
		}
	})
	t.Run("help", func(t *testing.T) {
		var help strings.Builder
		parseFlags([]string{"-help"}, &help)
		for _, w := range []string{"-hash-key-file", env, "/proc/PID/cmdline"} {
			if !strings.Contains(help.String(), w) {
				t.Errorf("-help does not mention %s:\n%s", w, help.String())
			}
		}
	})
}

// TestHelpShowsNoZeroKey checks that -help gives the hash key no default:
// a zero key printed as one would read as a key to use.
func TestHelpShowsNoZeroKey(t *testing.T) {
	var help strings.Builder
	parseFlags([]string{"-help"}, &help)
	if !strings.Contains(help.String(), "-hash-key hex") || strings.Contains(help.String(), "default 0000") {
		t.Errorf("-help lists a zero key as a default, or no -hash-key:\n%s", help.String())
	}
}
