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

// peerFlag is one of the repeatable -peer-prefix and -peer-range flags,
// which add to one list of peers: ADDR:PORT=PREFIX or ADDR:PORT=RANGE
// (in [conn.ParseRange] form), or ADDR:PORT alone for a peer that does
// not spread.
type peerFlag struct {
	peers   *[]conn.Peer
	asRange bool
}

func (f peerFlag) String() string {
	if f.peers == nil {
		return ""
	}
	s := make([]string, len(*f.peers))
	for i, p := range *f.peers {
		s[i] = p.Addr.String()
		if !p.Range.IsZero() {
			s[i] += "=" + p.Range.String()
		}
	}
	return strings.Join(s, " ")
}

func (f peerFlag) Set(v string) error {
	p, err := parsePeer(v, f.asRange)
	if err != nil {
		return err
	}
	for _, q := range *f.peers {
		if q.Addr == p.Addr {
			return fmt.Errorf("peer %v given twice", p.Addr)
		}
	}
	*f.peers = append(*f.peers, p)
	return nil
}

// parsePeer reads ADDR:PORT=PREFIX (asRange false) or ADDR:PORT=RANGE
// (asRange true), or ADDR:PORT alone. It checks the form; the conn
// checks the rest when the peers are applied.
func parsePeer(v string, asRange bool) (conn.Peer, error) {
	addr, spec, hasSpec := strings.Cut(v, "=")
	var p conn.Peer
	var err error
	if p.Addr, err = netip.ParseAddrPort(addr); err != nil {
		return p, fmt.Errorf("peer endpoint %q: %w (want [2001:db8::2]:51820=2001:db8:b::/64 or 192.0.2.7:51820=nat-ports=256)", addr, err)
	}
	p.Addr = netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port())
	switch {
	case !hasSpec:
	case asRange:
		if p.Range, err = conn.ParseRange(spec); err != nil {
			return p, fmt.Errorf("peer %v: %w", p.Addr, err)
		}
	default:
		if p.Range.Prefix, err = netip.ParsePrefix(spec); err != nil {
			return p, fmt.Errorf("peer prefix %q: %w (for ports, use -peer-range ADDR:PORT=ports=FIRST-LAST or nat-ports=N)", spec, err)
		}
		if !p.Range.Prefix.Addr().Is6() {
			return p, fmt.Errorf("peer prefix %v: want an IPv6 prefix (on IPv4, spread over ports: -peer-range ADDR:PORT=ports=FIRST-LAST)", p.Range.Prefix)
		}
		p.Range.Prefix = p.Range.Prefix.Masked()
	}
	return p, nil
}

// withDefaults fills in what the command line's defaults say for a peer
// given without them: -bits for a prefix without bits=, -open for a peer
// whose ports a NAT does not translate (a translated peer's ports are
// known only once its traffic arrives, so it is never open).
func withDefaults(p conn.Peer, bits int, open bool) conn.Peer {
	if p.Range.Prefix.IsValid() && p.Range.Bits == 0 {
		p.Range.Bits = bits
	}
	p.Open = open && !p.Range.Ports.Translated
	return p
}

// parseFlags turns the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("wgspread", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts options
	var peers []conn.Peer
	var prefix netip.Prefix
	fs.TextVar(&opts.cfg.Range, "range", conn.Range{}, "our widened `endpoint`, comma-separated: prefix=P (an IPv6 prefix routed to this host), bits=N (2^N of its addresses, default -bits), ports=FIRST-LAST (our source ports, a power-of-two count, none of them the listen port); e.g. ports=61000-61255 on IPv4 or behind a NAT, where no prefix is needed (empty: do not spread our sources)")
	fs.TextVar(&prefix, "prefix", netip.Prefix{}, "our spread `prefix`, shorthand for -range prefix=P: an IPv6 prefix routed to this host, e.g. 2001:db8:a::/64")
	fs.Var(peerFlag{&peers, false}, "peer-prefix", "a peer's canonical endpoint and spread prefix, `ADDR:PORT=PREFIX`, e.g. '[2001:db8:ff::2]:51820=2001:db8:b::/64'; repeat for each peer; ADDR:PORT alone for a peer without one")
	fs.Var(peerFlag{&peers, true}, "peer-range", "a peer's canonical endpoint and widened endpoint (its -range), `ADDR:PORT=RANGE`, e.g. '192.0.2.7:51820=ports=61000-61255', or nat-ports=N for a peer behind a NAT that rewrites its N ports (each flow is answered on the port it last came from); repeat for each peer")
	bitsFlag := fs.Int("bits", conn.DefaultBits, "spread over 2^`bits` addresses of each prefix that gives no bits= of its own; both ends must agree")
	hashKey := secretflag.Secret{What: "the hash key", Flag: "hash-key", Env: hashKeyEnv}
	secretflag.Var(fs, &opts.cfg.Key, hashKey.Flag, "flow hash key: 32 `hex` digits, the same at both ends (default: random, so the ends map flows differently); "+
		"every local user can read it in /proc/PID/cmdline: prefer -hash-key-file or $"+hashKeyEnv)
	fs.StringVar(&hashKey.File, "hash-key-file", "", "read the flow hash key (32 hex digits) from `file`; or set $"+hashKeyEnv+"; give the key one way only")
	fs.BoolVar(&opts.cfg.Symmetric, "symmetric", true, "map both directions of an inner flow to one outer address pair, so stateful firewalls match replies")
	fs.BoolVar(&opts.localRoute, "local-route", true, "add the AnyIP local route for -prefix (ip -6 route add local PREFIX dev lo) and remove it at exit")
	fs.BoolVar(&opts.open, "open", false, "declare every peer's whole spread range reachable (no stateful firewall in front of it): flows go on their spread pairs at once, instead of on the peer's endpoint until the peer's own traffic for them arrived on their pair")
	fs.StringVar(&opts.peersFile, "peers-file", "", "read more peers from `file`, one a line: ADDR:PORT=PREFIX [bits=N] [open], or ADDR:PORT=RANGE [open]; reread on SIGHUP (kill -HUP), so peers' spread options change while the interface runs; a peer also given with -peer-prefix or -peer-range takes the file's line")
	fs.BoolVar(&opts.stockBind, "stock-bind", false, "use wireguard-go's own StdNetBind and spread nothing: a baseline for comparisons (the spread flags are then ignored)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wgspread [flags] INTERFACE\n\nA userspace WireGuard interface that spreads inner flows over outer IPv6 addresses and UDP ports;\nconfigure it with wg set or wg setconf. SIGHUP rereads -peers-file.\nOn IPv4, behind a NAT or without a prefix, spread over ports: the client -range ports=61000-61255,\nthe server -peer-range 'CLIENT:PORT=nat-ports=256' (or =ports=61000-61255 with no NAT).\n\nflags:")
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
	bits := *bitsFlag
	if bits < 0 || bits > 32 {
		return opts, fmt.Errorf("-bits %d: give 0 to 32", bits)
	}
	if prefix.IsValid() {
		if opts.cfg.Range.Prefix.IsValid() {
			return opts, fmt.Errorf("-prefix %v and -range %v both give our prefix: give one", prefix, opts.cfg.Range)
		}
		if !prefix.Addr().Is6() {
			return opts, fmt.Errorf("-prefix %v: want an IPv6 prefix (on IPv4, spread over ports: -range ports=FIRST-LAST)", prefix)
		}
		opts.cfg.Range.Prefix = prefix.Masked()
	}
	if opts.cfg.Range.Prefix.IsValid() && opts.cfg.Range.Bits == 0 {
		opts.cfg.Range.Bits = bits
	}
	for i := range peers {
		peers[i] = withDefaults(peers[i], bits, opts.open)
	}
	opts.flagPeers = peers
	opts.cfg.Peers = peers
	if opts.peersFile != "" {
		file, err := readPeersFile(opts.peersFile, bits, opts.open)
		if err != nil {
			return opts, fmt.Errorf("-peers-file: %w", err)
		}
		opts.cfg.Peers = mergePeers(peers, file)
	}
	for _, r := range append([]conn.Range{opts.cfg.Range}, rangesOf(opts.cfg.Peers)...) {
		if p := r.Prefix; p.IsValid() && 128-p.Bits() < r.Bits {
			return opts, fmt.Errorf("prefix %v has fewer than 2^%d addresses: shorten the prefix or lower -bits (or its bits=)", p, r.Bits)
		}
	}
	if len(opts.cfg.Peers) == 0 && !opts.stockBind {
		return opts, errors.New("give each peer's canonical endpoint with -peer-prefix ADDR:PORT=PREFIX, -peer-range ADDR:PORT=RANGE or in -peers-file: the interface spreads only to those")
	}
	if !opts.stockBind {
		// What the conn would refuse when wireguard-go opens the Bind,
		// said now rather than in the device's log.
		if _, err := opts.cfg.Validate(); err != nil {
			return opts, err
		}
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

func rangesOf(peers []conn.Peer) []conn.Range {
	rs := make([]conn.Range, len(peers))
	for i, p := range peers {
		rs[i] = p.Range
	}
	return rs
}

// describe says what the interface spreads, in one line for the log.
func describe(opts options) string {
	if opts.stockBind {
		return "stock StdNetBind, nothing spread"
	}
	var b strings.Builder
	if opts.cfg.Range.IsZero() {
		b.WriteString("sources unspread")
	} else {
		fmt.Fprintf(&b, "sources in %v", opts.cfg.Range)
	}
	for _, p := range opts.cfg.Peers {
		if p.Range.IsZero() {
			fmt.Fprintf(&b, ", peer %v unspread", p.Addr)
		} else {
			fmt.Fprintf(&b, ", peer %v in %v", p.Addr, p.Range)
		}
	}
	b.WriteString(" (")
	if opts.cfg.Symmetric {
		b.WriteString("symmetric")
	} else {
		b.WriteString("not symmetric")
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
