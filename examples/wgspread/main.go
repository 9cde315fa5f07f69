package main

import (
	"bytes"
	"encoding"
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
		if p.Prefix.IsValid() {
			s[i] += "=" + p.Prefix.String()
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
		if p.Prefix, err = netip.ParsePrefix(prefix); err != nil {
			return fmt.Errorf("peer prefix %q: %w", prefix, err)
		}
		if !p.Prefix.Addr().Is6() {
			return fmt.Errorf("peer prefix %v: want an IPv6 prefix", p.Prefix)
		}
		p.Prefix = p.Prefix.Masked()
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
	fs.TextVar(&opts.cfg.Prefix, "prefix", netip.Prefix{}, "our spread `prefix`: an IPv6 prefix routed to this host, e.g. 2001:db8:a::/64 (empty: do not spread our sources)")
	fs.Var(&peers, "peer-prefix", "a peer's canonical endpoint and spread prefix, `ADDR:PORT=PREFIX`, e.g. '[2001:db8:ff::2]:51820=2001:db8:b::/64'; repeat for each peer; ADDR:PORT alone for a peer without one")
	fs.IntVar(&opts.cfg.Bits, "bits", conn.DefaultBits, "spread over 2^`bits` addresses of each prefix; both ends must agree")
	hashKey := secret{what: "the hash key", flag: "hash-key", env: hashKeyEnv}
	secretVar(fs, &opts.cfg.Key, hashKey.flag, "flow hash key: 32 `hex` digits, the same at both ends (default: random, so the ends map flows differently); "+
		"every local user can read it in /proc/PID/cmdline: prefer -hash-key-file or $"+hashKeyEnv)
	fs.StringVar(&hashKey.file, "hash-key-file", "", "read the flow hash key (32 hex digits) from `file`; or set $"+hashKeyEnv+"; give the key one way only")
	fs.BoolVar(&opts.cfg.Symmetric, "symmetric", true, "map both directions of an inner flow to one outer address pair, so stateful firewalls match replies")
	fs.BoolVar(&opts.localRoute, "local-route", true, "add the AnyIP local route for -prefix (ip -6 route add local PREFIX dev lo) and remove it at exit")
	fs.BoolVar(&opts.stockBind, "stock-bind", false, "use wireguard-go's own StdNetBind and spread nothing: a baseline for comparisons (the spread flags are then ignored)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wgspread [flags] INTERFACE\n\nA userspace WireGuard interface that spreads inner flows over outer IPv6 addresses;\nconfigure it with wg set or wg setconf.\n\nflags:")
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
	if p := opts.cfg.Prefix; p.IsValid() {
		if !p.Addr().Is6() {
			return opts, fmt.Errorf("-prefix %v: want an IPv6 prefix", p)
		}
		opts.cfg.Prefix = p.Masked()
	}
	if opts.cfg.Bits < 0 || opts.cfg.Bits > 32 {
		return opts, fmt.Errorf("-bits %d: give 0 to 32", opts.cfg.Bits)
	}
	for _, p := range append([]netip.Prefix{opts.cfg.Prefix}, prefixesOf(peers)...) {
		if p.IsValid() && 128-p.Bits() < opts.cfg.Bits {
			return opts, fmt.Errorf("prefix %v has fewer than 2^%d addresses: shorten the prefix or lower -bits", p, opts.cfg.Bits)
		}
	}
	if len(peers) == 0 && !opts.stockBind {
		return opts, errors.New("give each peer's canonical endpoint with -peer-prefix ADDR:PORT=PREFIX: the interface spreads only to those")
	}
	opts.cfg.Peers = peers
	given, err := hashKey.load(fs, &opts.cfg.Key)
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

// secretVar defines the flag -name for a key that parses itself. A key
// has no default to show in -help: the zero key is no one's key.
func secretVar(fs *flag.FlagSet, key interface {
	encoding.TextMarshaler
	encoding.TextUnmarshaler
}, name, usage string) {
	fs.TextVar(key, name, key, usage)
	fs.Lookup(name).DefValue = ""
}

// secret is a key and the places it can come from: its flag (-NAME), its
// file flag (-NAME-file) and its environment variable. Two places are an
// error, even when they agree: one of them would be forgotten when the
// key changes.
type secret struct {
	what, flag, env string // "the hash key", "hash-key", "WGSPREAD_HASH_KEY"
	file            string // the value of -NAME-file
}

// load sets key from its file or its variable (the flag has set it
// already) and says whether any of the three gave it. An empty variable
// counts as unset; a file or a variable may end in white space.
func (s secret) load(fs *flag.FlagSet, key encoding.TextUnmarshaler) (given bool, err error) {
	var places []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == s.flag {
			places = append(places, "-"+s.flag)
		}
	})
	if s.file != "" {
		places = append(places, "-"+s.flag+"-file")
	}
	env := os.Getenv(s.env)
	if env != "" {
		places = append(places, "$"+s.env)
	}
	if len(places) > 1 {
		return false, fmt.Errorf("%s is given %d ways (%s): give it one way only, preferably -%s-file or $%s", s.what, len(places), strings.Join(places, ", "), s.flag, s.env)
	}
	switch {
	case s.file != "":
		b, err := os.ReadFile(s.file)
		if err != nil {
			return false, fmt.Errorf("-%s-file: %w", s.flag, err)
		}
		if err := key.UnmarshalText(bytes.TrimSpace(b)); err != nil {
			return false, fmt.Errorf("-%s-file %s: %w", s.flag, s.file, err)
		}
	case env != "":
		if err := key.UnmarshalText([]byte(strings.TrimSpace(env))); err != nil {
			return false, fmt.Errorf("$%s: %w", s.env, err)
		}
	}
	return len(places) == 1, nil
}

func prefixesOf(peers []conn.Peer) []netip.Prefix {
	ps := make([]netip.Prefix, len(peers))
	for i, p := range peers {
		ps[i] = p.Prefix
	}
	return ps
}

// describe says what the interface spreads, in one line for the log.
func describe(opts options) string {
	if opts.stockBind {
		return "stock StdNetBind, nothing spread"
	}
	var b strings.Builder
	if opts.cfg.Prefix.IsValid() {
		fmt.Fprintf(&b, "sources in %v", opts.cfg.Prefix)
	} else {
		b.WriteString("sources unspread")
	}
	for _, p := range opts.cfg.Peers {
		if p.Prefix.IsValid() {
			fmt.Fprintf(&b, ", peer %v in %v", p.Addr, p.Prefix)
		} else {
			fmt.Fprintf(&b, ", peer %v unspread", p.Addr)
		}
	}
	fmt.Fprintf(&b, " (2^%d addresses", opts.cfg.Bits)
	if opts.cfg.Symmetric {
		b.WriteString(", symmetric")
	}
	b.WriteString(")")
	return b.String()
}
