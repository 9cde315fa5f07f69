package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"strings"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/hash"
	"github.com/flowspread/flowspread/internal/secretflag"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options is what the command line says.
type options struct {
	iface string
	cfg   conn.Config
	// randomKey says the hash key was not given: flows then map
	// differently at each end.
	randomKey  bool
	localRoute bool
	// stockBind runs wireguard-go's own StdNetBind, unspread: the
	// baseline to compare with.
	stockBind bool
	// open declares every peer's range reachable (conn.Peer.Open).
	open bool
	// flagPeers are the -peer-prefix peers; peersFile, the file whose
	// peers are laid over them, at start and on each SIGHUP.
	flagPeers []conn.Peer
	peersFile string
}

// run is the command: it returns the exit status (2 for bad flags, 1 when
// the interface fails).
func run(args []string, stderr io.Writer) int {
	logger := log.New(stderr, "wgspread: ", 0)
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		logger.Print(err)
		return 2
	}
	if opts.randomKey {
		logger.Print("no hash key: using a random one, so the two ends map a flow to different address pairs; give both ends the same key with -hash-key-file or $" + hashKeyEnv)
	}
	stopProfile, err := startProfile(opts.iface)
	if err != nil {
		logger.Print(err)
		return 1
	}
	err = serve(opts, logger)
	if perr := stopProfile(); perr != nil {
		logger.Printf("write the CPU profile: %v", perr)
	}
	if err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// peerList is the repeatable -peer-prefix flag: ADDR:PORT=PREFIX, or
// ADDR:PORT alone for a peer that does not spread.
type peerList []conn.Peer

func (l *peerList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.Addr.String()
		if p.Range.Prefix.IsValid() {
			s[i] += "=" + p.Range.Prefix.String()
		}
	}
	return strings.Join(s, ",")
}

func (l *peerList) Set(v string) error {
	addr, prefix, hasPrefix := strings.Cut(v, "=")
	var p conn.Peer
	var err error
	if p.Addr, err = netip.ParseAddrPort(addr); err != nil {
		return fmt.Errorf("peer endpoint %q: %w (want [2001:db8::2]:51820=2001:db8:b::/64)", addr, err)
	}
	p.Addr = netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port())
	if hasPrefix {
		if p.Range.Prefix, err = netip.ParsePrefix(prefix); err != nil {
			return fmt.Errorf("peer prefix %q: %w", prefix, err)
		}
		if !p.Range.Prefix.Addr().Is6() {
			return fmt.Errorf("peer prefix %v: want an IPv6 prefix", p.Range.Prefix)
		}
		p.Range.Prefix = p.Range.Prefix.Masked()
	}
	for _, q := range *l {
		if q.Addr == p.Addr {
			return fmt.Errorf("peer %v given twice", p.Addr)
		}
	}
	*l = append(*l, p)
	return nil
}

// parseFlags turns the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("wgspread", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts options
	var peers peerList
	fs.TextVar(&opts.cfg.Range.Prefix, "prefix", netip.Prefix{}, "our spread `prefix`: an IPv6 prefix routed to this host, e.g. 2001:db8:a::/64 (empty: do not spread our sources)")
	fs.Var(&peers, "peer-prefix", "a peer's canonical endpoint and spread prefix, `ADDR:PORT=PREFIX`, e.g. '[2001:db8:ff::2]:51820=2001:db8:b::/64'; repeat for each peer; ADDR:PORT alone for a peer without one")
	fs.IntVar(&opts.cfg.Range.Bits, "bits", conn.DefaultBits, "spread over 2^`bits` addresses of each prefix; both ends must agree")
	hashKey := secretflag.Secret{What: "the hash key", Flag: "hash-key", Env: hashKeyEnv}
	secretflag.Var(fs, &opts.cfg.Key, hashKey.Flag, "flow hash key: 32 `hex` digits, the same at both ends (default: random, so the ends map flows differently); "+
		"every local user can read it in /proc/PID/cmdline: prefer -hash-key-file or $"+hashKeyEnv)
	fs.StringVar(&hashKey.File, "hash-key-file", "", "read the flow hash key (32 hex digits) from `file`; or set $"+hashKeyEnv+"; give the key one way only")
	fs.BoolVar(&opts.cfg.Symmetric, "symmetric", true, "map both directions of an inner flow to one outer address pair, so stateful firewalls match replies")
	fs.BoolVar(&opts.localRoute, "local-route", true, "add the AnyIP local route for -prefix (ip -6 route add local PREFIX dev lo) and remove it at exit")
	fs.BoolVar(&opts.open, "open", false, "declare every peer's whole spread range reachable (no stateful firewall in front of it): flows go on their spread pairs at once, instead of on the peer's endpoint until the peer's own traffic for them arrived on their pair")
	fs.StringVar(&opts.peersFile, "peers-file", "", "read more peers from `file`, one a line: ADDR:PORT=PREFIX [bits=N] [open]; reread on SIGHUP (kill -HUP), so peers' spread options change while the interface runs; a peer also given with -peer-prefix takes the file's line")
	fs.BoolVar(&opts.stockBind, "stock-bind", false, "use wireguard-go's own StdNetBind and spread nothing: a baseline for comparisons (the spread flags are then ignored)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wgspread [flags] INTERFACE\n\nA userspace WireGuard interface that spreads inner flows over outer IPv6 addresses;\nconfigure it with wg set or wg setconf. SIGHUP rereads -peers-file.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return opts, errors.New("give exactly one interface name, after the flags")
	}
	opts.iface = fs.Arg(0)
	if len(opts.iface) >= 16 || strings.ContainsAny(opts.iface, "/ ") {
		return opts, fmt.Errorf("interface name %q: use at most 15 characters, no slash or space", opts.iface)
	}
	if p := opts.cfg.Range.Prefix; p.IsValid() {
		if !p.Addr().Is6() {
			return opts, fmt.Errorf("-prefix %v: want an IPv6 prefix", p)
		}
		opts.cfg.Range.Prefix = p.Masked()
	}
	if opts.cfg.Range.Bits < 0 || opts.cfg.Range.Bits > 32 {
		return opts, fmt.Errorf("-bits %d: give 0 to 32", opts.cfg.Range.Bits)
	}
	for _, p := range append([]netip.Prefix{opts.cfg.Range.Prefix}, prefixesOf(peers)...) {
		if p.IsValid() && 128-p.Bits() < opts.cfg.Range.Bits {
			return opts, fmt.Errorf("prefix %v has fewer than 2^%d addresses: shorten the prefix or lower -bits", p, opts.cfg.Range.Bits)
		}
	}
	for i := range peers {
		peers[i].Open = opts.open
		if peers[i].Range.Prefix.IsValid() {
			// Both ends agree on -bits: the peer's range is as wide as ours.
			peers[i].Range.Bits = opts.cfg.Range.Bits
		}
	}
	opts.flagPeers = peers
	opts.cfg.Peers = peers
	if opts.peersFile != "" {
		file, err := readPeersFile(opts.peersFile, opts.cfg.Range.Bits, opts.open)
		if err != nil {
			return opts, fmt.Errorf("-peers-file: %w", err)
		}
		opts.cfg.Peers = mergePeers(peers, file)
	}
	if len(opts.cfg.Peers) == 0 && !opts.stockBind {
		return opts, errors.New("give each peer's canonical endpoint with -peer-prefix ADDR:PORT=PREFIX or in -peers-file: the interface spreads only to those")
	}
	given, err := hashKey.Load(fs, &opts.cfg.Key)
	if err != nil {
		return opts, err
	}
	if !given {
		if opts.cfg.Key, err = hash.NewKey(); err != nil {
			return opts, err
		}
	}
	opts.randomKey = !given
	return opts, nil
}

// hashKeyEnv names the environment variable that may hold the hash key:
// unlike the command line, a process's environment is readable only by
// its own user and root.
const hashKeyEnv = "WGSPREAD_HASH_KEY"

func prefixesOf(peers []conn.Peer) []netip.Prefix {
	ps := make([]netip.Prefix, len(peers))
	for i, p := range peers {
		ps[i] = p.Range.Prefix
	}
	return ps
}

// describe says what the interface spreads, in one line for the log.
func describe(opts options) string {
	if opts.stockBind {
		return "stock StdNetBind, nothing spread"
	}
	var b strings.Builder
	if opts.cfg.Range.Prefix.IsValid() {
		fmt.Fprintf(&b, "sources in %v", opts.cfg.Range.Prefix)
	} else {
		b.WriteString("sources unspread")
	}
	for _, p := range opts.cfg.Peers {
		if p.Range.Prefix.IsValid() {
			fmt.Fprintf(&b, ", peer %v in %v", p.Addr, p.Range.Prefix)
		} else {
			fmt.Fprintf(&b, ", peer %v unspread", p.Addr)
		}
	}
	fmt.Fprintf(&b, " (2^%d addresses", opts.cfg.Range.Bits)
	if opts.cfg.Symmetric {
		b.WriteString(", symmetric")
	}
	if opts.open {
		b.WriteString(", peers open")
	}
	if opts.peersFile != "" {
		fmt.Fprintf(&b, ", peers from %s, reread on SIGHUP", opts.peersFile)
	}
	b.WriteString(")")
	return b.String()
}
