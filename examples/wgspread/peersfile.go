package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/flowspread/flowspread/conn"
)

// readPeersFile reads the -peers-file: the spread options of peers, one
// peer a line, as -peer-prefix or -peer-range takes them and then
// options:
//
//	# endpoint=prefix or endpoint=range          options
//	[2001:db8:ff::2]:51820=2001:db8:b::/64       bits=10 open
//	[2001:db8:ff::3]:51820=prefix=2001:db8:c::/64,bits=8,ports=61000-61255
//	198.51.100.9:51820=nat-ports=256              # behind a NAT
//	192.0.2.7:51820                              # a peer that does not spread
//
// A range is told from a prefix by its key=value form. bits=N sets the
// size of a prefix's range (default: -bits; a range gives its bits=
// inside), open declares every pair of its range reachable (default:
// -open, except for a peer with nat-ports, whose ports are known only
// once its traffic arrives). The conn validates the rest when the peers
// are applied.
func readPeersFile(path string, bits int, open bool) ([]conn.Peer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	peers, err := parsePeers(f, bits, open)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return peers, nil
}

func parsePeers(r io.Reader, bits int, open bool) ([]conn.Peer, error) {
	var peers []conn.Peer
	s := bufio.NewScanner(r)
	for n := 1; s.Scan(); n++ {
		line, _, _ := strings.Cut(s.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		_, spec, _ := strings.Cut(fields[0], "=")
		asRange := strings.Contains(spec, "=")
		if err := (peerFlag{&peers, asRange}).Set(fields[0]); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		p := &peers[len(peers)-1]
		*p = withDefaults(*p, 0, open)
		for _, opt := range fields[1:] {
			switch v, isBits := strings.CutPrefix(opt, "bits="); {
			case opt == "open":
				if p.Range.Ports.Translated {
					return nil, fmt.Errorf("line %d: open: a NAT rewrites this peer's ports (nat-ports), so they are known only once its traffic arrives: drop open", n)
				}
				p.Open = true
			case opt == "open=false":
				p.Open = false
			case isBits && asRange:
				return nil, fmt.Errorf("line %d: %q: give bits= inside the range, after its prefix=", n, opt)
			case isBits:
				b, err := strconv.Atoi(v)
				if err != nil || !p.Range.Prefix.IsValid() {
					return nil, fmt.Errorf("line %d: %q: want bits=N after a peer with a prefix", n, opt)
				}
				p.Range.Bits = b
			default:
				return nil, fmt.Errorf("line %d: unknown option %q: want bits=N, open or open=false", n, opt)
			}
		}
		if p.Range.Prefix.IsValid() && p.Range.Bits == 0 {
			p.Range.Bits = bits
		}
	}
	return peers, s.Err()
}

// mergePeers returns the command line's peers with the file's laid over
// them: a peer in both takes the file's options.
func mergePeers(flags, file []conn.Peer) []conn.Peer {
	out := slices.Clone(file)
	for _, p := range flags {
		if !slices.ContainsFunc(file, func(q conn.Peer) bool { return q.Addr == p.Addr }) {
			out = append(out, p)
		}
	}
	return out
}

// peerSetter is what applyPeers changes: the Bind's runtime peers.
type peerSetter interface {
	SetPeer(conn.Peer) error
	RemovePeer(addr netip.AddrPort) bool
	Peers() []conn.Peer
}

// applyPeers makes the Bind spread to want: it sets each of them (a peer
// whose range stays keeps the paths it learned) and removes the others.
// A peer the conn refuses keeps its old options, and the error says why.
func applyPeers(b peerSetter, want []conn.Peer) (removed int, err error) {
	var errs []error
	for _, p := range want {
		if err := b.SetPeer(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range b.Peers() {
		if !slices.ContainsFunc(want, func(q conn.Peer) bool { return q.Addr == p.Addr }) && b.RemovePeer(p.Addr) {
			removed++
		}
	}
	return removed, errors.Join(errs...)
}

// reloadPeers rereads the -peers-file and applies it with the command
// line's peers; on an error in the file nothing changes.
func reloadPeers(opts options, b peerSetter, logger *log.Logger) {
	file, err := readPeersFile(opts.peersFile, opts.cfg.Range.Bits, opts.open)
	if err != nil {
		logger.Printf("reload the peers: %v: keeping them as they were", err)
		return
	}
	want := mergePeers(opts.flagPeers, file)
	removed, err := applyPeers(b, want)
	if err != nil {
		logger.Printf("reload the peers from %s: %v", opts.peersFile, err)
	}
	logger.Printf("reloaded %s: spreading to %d peers, %d removed", opts.peersFile, len(b.Peers()), removed)
}
