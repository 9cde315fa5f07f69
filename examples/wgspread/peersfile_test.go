package main

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
)

func TestParsePeers(t *testing.T) {
	b := netip.MustParseAddrPort("[2001:db8:ff::2]:51820")
	c := netip.MustParseAddrPort("[2001:db8:ff::3]:51820")
	v4 := netip.MustParseAddrPort("192.0.2.7:51820")
	pb, pc := netip.MustParsePrefix("2001:db8:b::/64"), netip.MustParsePrefix("2001:db8:c::/64")
	tests := []struct {
		name    string
		file    string
		open    bool
		want    []conn.Peer
		wantErr string
	}{
		{"empty", "# nothing\n\n", false, nil, ""},
		{"options", "[2001:db8:ff::2]:51820=2001:db8:b::/64 open\n  [2001:db8:ff::3]:51820=2001:db8:c::1/64 bits=8 # comment\n192.0.2.7:51820\n", false,
			[]conn.Peer{{Addr: b, Range: conn.Range{Prefix: pb, Bits: 10}, Open: true}, {Addr: c, Range: conn.Range{Prefix: pc, Bits: 8}}, {Addr: v4}}, ""},
		{"-open is the default", "[2001:db8:ff::2]:51820=2001:db8:b::/64\n[2001:db8:ff::3]:51820=2001:db8:c::/64 open=false\n", true,
			[]conn.Peer{{Addr: b, Range: conn.Range{Prefix: pb, Bits: 10}, Open: true}, {Addr: c, Range: conn.Range{Prefix: pc, Bits: 10}}}, ""},
		{"unknown option", "[2001:db8:ff::2]:51820=2001:db8:b::/64 fast\n", false, nil, `line 1: unknown option "fast"`},
		{"bits without a prefix", "\n192.0.2.7:51820 bits=4\n", false, nil, "line 2"},
		{"bad bits", "[2001:db8:ff::2]:51820=2001:db8:b::/64 bits=x\n", false, nil, "bits=N"},
		{"twice", "192.0.2.7:51820\n192.0.2.7:51820\n", false, nil, "given twice"},
		{"no port", "2001:db8:ff::2=2001:db8:b::/64\n", false, nil, "peer endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePeers(strings.NewReader(tt.file), 10, tt.open)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestParseFlagsPeersFile checks that the file's peers join the command
// line's at start, the file's line winning for a peer in both, and that
// a peers file alone is enough.
func TestParseFlagsPeersFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(file, []byte("[2001:db8:ff::2]:51821=2001:db8:b::/64 open\n[2001:db8:ff::3]:51820\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"-peer-prefix", "[2001:db8:ff::2]:51821=2001:db8:b::/64", "-peer-prefix", "[2001:db8:ff::4]:1=2001:db8:d::/64",
		"-peers-file", file, "wg0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, p := range o.cfg.Peers {
		addrs = append(addrs, p.Addr.String())
	}
	if want := []string{"[2001:db8:ff::2]:51821", "[2001:db8:ff::3]:51820", "[2001:db8:ff::4]:1"}; !slices.Equal(addrs, want) {
		t.Errorf("peers %v, want %v", addrs, want)
	}
	if !o.cfg.Peers[0].Open || len(o.flagPeers) != 2 || o.flagPeers[0].Open {
		t.Errorf("the file's line must win for a peer in both, and leave the command line's as given: %+v, %+v", o.cfg.Peers, o.flagPeers)
	}
	if _, err := parseFlags([]string{"-peers-file", file, "wg0"}, io.Discard); err != nil {
		t.Errorf("a peers file alone: %v", err)
	}
	if _, err := parseFlags([]string{"-peers-file", file + ".missing", "wg0"}, io.Discard); err == nil || !strings.Contains(err.Error(), "-peers-file") {
		t.Errorf("a missing peers file: error %v", err)
	}
}

// fakePeers stands for the Bind: it refuses peers on one address.
type fakePeers struct {
	peers  []conn.Peer
	refuse netip.AddrPort
}

func (f *fakePeers) SetPeer(p conn.Peer) error {
	if p.Addr == f.refuse {
		return errors.New("refused")
	}
	if i := slices.IndexFunc(f.peers, func(q conn.Peer) bool { return q.Addr == p.Addr }); i >= 0 {
		f.peers[i] = p
	} else {
		f.peers = append(f.peers, p)
	}
	return nil
}

func (f *fakePeers) RemovePeer(a netip.AddrPort) bool {
	n := len(f.peers)
	f.peers = slices.DeleteFunc(f.peers, func(q conn.Peer) bool { return q.Addr == a })
	return len(f.peers) < n
}

func (f *fakePeers) Peers() []conn.Peer { return slices.Clone(f.peers) }

func TestApplyPeers(t *testing.T) {
	a, b, c := netip.MustParseAddrPort("[2001:db8::a]:1"), netip.MustParseAddrPort("[2001:db8::b]:1"), netip.MustParseAddrPort("[2001:db8::c]:1")
	f := &fakePeers{peers: []conn.Peer{{Addr: a}, {Addr: b}}, refuse: c}
	removed, err := applyPeers(f, []conn.Peer{{Addr: b, Open: true}, {Addr: c}})
	if err == nil {
		t.Errorf("a refused peer: no error")
	}
	if want := []conn.Peer{{Addr: b, Open: true}}; removed != 1 || !slices.Equal(f.peers, want) {
		t.Errorf("removed %d, peers %+v; want 1 and %+v", removed, f.peers, want)
	}
}
