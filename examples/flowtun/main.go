package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/secretflag"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is the command: it returns the exit status (2 for bad flags, 1 when
// the tunnel fails).
func run(args []string, stderr io.Writer) int {
	logger := log.New(stderr, "flowtun: ", 0)
	cfg, statsPath, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		logger.Print(err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The counter starts at the wall clock in nanoseconds: a restarted
	// tunnel sends counters above any it sent before (we send far fewer
	// than 10^9 datagrams a second), so it never repeats a nonce under the
	// PSK's keys, and the peer's replay window accepts it at once. Our own
	// window takes nothing sealed more than maxClockSkew before now.
	t, err := openTunnel(cfg, wallClock())
	if err != nil {
		logger.Print(err)
		return 1
	}
	logger.Print(describe(t))

	stopProfile, err := startProfile()
	if err != nil {
		logger.Print(err)
		t.close()
		return 1
	}

	dump := func() {
		if statsPath == "" {
			return
		}
		if err := writeStats(statsPath, t.stats(), stderr); err != nil {
			logger.Print(err)
		}
	}
	if len(statsSignals) > 0 {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, statsSignals...)
		defer signal.Stop(usr1)
		go func() {
			for {
				select {
				case <-usr1:
					dump()
				case <-t.done:
					return
				}
			}
		}()
	}

	err = t.run(ctx)
	if perr := stopProfile(); perr != nil {
		logger.Print(perr)
	}
	if cerr := t.close(); cerr != nil {
		logger.Print(cerr)
	}
	dump()
	if err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// describe says what the tunnel end does, in one line for the log.
func describe(t *tunnel) string {
	cfg := &t.cfg
	var b strings.Builder
	fmt.Fprintf(&b, "%s up, MTU %d", t.tun.name, cfg.mtu)
	for _, a := range cfg.addrs {
		fmt.Fprintf(&b, ", %v", a)
	}
	fmt.Fprintf(&b, "; us %v, peer %v; spread %v", t.self, cfg.peer, cfg.spread)
	if cfg.spread.ourPrefix() {
		fmt.Fprintf(&b, ", sources in %v", cfg.ours)
	}
	if cfg.spread.peerPrefix() {
		fmt.Fprintf(&b, ", destinations in %v", cfg.theirs)
	}
	if cfg.spread != spreadOff {
		if cfg.open {
			b.WriteString(", the peer's range open")
		} else {
			b.WriteString(", paths learned")
		}
	}
	if cfg.keepalive > 0 {
		fmt.Fprintf(&b, "; keepalive every %v", cfg.keepalive)
	}
	if s := t.conn.Stats(); s.GSO {
		b.WriteString("; UDP GSO on")
	}
	return b.String()
}

// prefixList is a flag that takes prefixes, repeated or comma-separated.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return err
		}
		*l = append(*l, p)
	}
	return nil
}

// parseFlags turns the command line into a config and the -stats path.
// Addresses, prefixes and keys parse themselves (flag.TextVar).
func parseFlags(args []string, stderr io.Writer) (config, string, error) {
	fs := flag.NewFlagSet("flowtun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := config{}
	var addrs, routes prefixList
	fs.StringVar(&cfg.name, "name", "tun0", "`name` of the TUN interface to create")
	port := fs.Uint("listen-port", 51820, "UDP `port` to listen on; the peer's -peer names it")
	fs.TextVar(&cfg.peer, "peer", netip.AddrPort{}, "the peer's canonical outer `address`:port, e.g. [2001:db8:ff::2]:51820 (required)")
	fs.TextVar(&cfg.self, "self", netip.AddrPort{}, "our canonical outer `address`:port as the peer's -peer gives it (default: the source address of the route to the peer, and -listen-port); it must be an address of this host and -listen-port, unless -nat")
	fs.BoolVar(&cfg.nat, "nat", false, "-self is the public address and port a NAT maps us to, not this host's: do not check that it is ours (that check stops a command copied from the peer, which would make both ends seal with one key)")
	fs.TextVar(&cfg.ours, "range", conn.Range{}, "our widened `endpoint`, comma-separated: prefix=P (an IPv6 prefix that reaches this host), bits=N (2^N of its addresses, default 10), ports=FIRST-LAST (our source ports, a power-of-two count, none of them -listen-port); e.g. ports=61000-61255 (IPv4, NAT, no prefix needed)")
	fs.TextVar(&cfg.theirs, "peer-range", conn.Range{}, "the peer's widened `endpoint` (its -range); nat-ports=N in place of ports= when a NAT in front of the peer rewrites its N ports (each flow is answered on the port it arrives from)")
	var prefix, peerPrefix netip.Prefix
	fs.TextVar(&prefix, "prefix", netip.Prefix{}, "our spread `prefix`: shorthand for -range prefix=P,bits=B, e.g. 2001:db8:a::/64")
	fs.TextVar(&peerPrefix, "peer-prefix", netip.Prefix{}, "the peer's spread `prefix` (its -prefix): shorthand for -peer-range prefix=P,bits=B")
	bits := fs.Int("bits", conn.DefaultBits, "with -prefix and -peer-prefix, spread over 2^`bits` addresses of each; both ends must agree")
	spread := fs.String("spread", "auto", "what to spread: off (one outer flow), src (our sources; the peer runs dst), dst (destinations in the peer's range; the peer runs src), both, or auto (from the ranges given)")
	psk := secretflag.Secret{What: "the PSK", Flag: "psk", Env: pskEnv}
	secretflag.Var(fs, (*pskText)(&cfg.psk), psk.Flag, "pre-shared `key`: 64 hex digits, the same at both ends. On a command line every user of the host can read it (ps, /proc/PID/cmdline): prefer -psk-file or $"+pskEnv)
	fs.StringVar(&psk.File, "psk-file", "", "read the pre-shared key (64 hex digits) from `file`")
	hashKey := secretflag.Secret{What: "the hash key", Flag: "hash-key", Env: hashKeyEnv}
	secretflag.Var(fs, &cfg.hashKey, hashKey.Flag, "flow hash `key`: 32 hex digits, the same at both ends (default: derived from the PSK). On a command line every user of the host can read it: prefer -hash-key-file or $"+hashKeyEnv)
	fs.StringVar(&hashKey.File, "hash-key-file", "", "read the flow hash key (32 hex digits) from `file`")
	fs.BoolVar(&cfg.symmetric, "symmetric", true, "map both directions of an inner flow to one outer address pair, so stateful firewalls match replies")
	fs.Var(&addrs, "addr", "inner `address/len` of the TUN interface, IPv4 or IPv6; repeat or separate with commas")
	fs.Var(&routes, "route", "inner `prefix` to route through the tunnel; repeat or separate with commas")
	fs.IntVar(&cfg.mtu, "mtu", 1420, "MTU of the TUN interface; outer datagrams are 73 bytes longer over IPv6")
	fs.BoolVar(&cfg.localRoute, "local-route", true, "add the AnyIP local route for -prefix (ip -6 route add local PREFIX dev lo) and remove it at exit")
	statsPath := fs.String("stats", "-", "write counters as JSON to `file` at exit and on SIGUSR1; - for standard error, empty for none")
	fs.IntVar(&cfg.batch, "batch", 32, "datagrams per read and write batch")
	fs.BoolVar(&cfg.flowLabel, "flow-label", false, "set each outer packet's IPv6 flow label from its outer address pair (RFC 6438)")
	fs.BoolVar(&cfg.gso, "gso", true, "send runs of one flow as UDP GSO super-datagrams where the kernel can")
	fs.BoolVar(&cfg.open, "open", false, "the peer's whole spread range (-peer-prefix) is reachable from ours, no stateful firewall in front of it: send each flow on its own address pair at once. Without it, a flow goes on the canonical pair, with a probe copy on its own, until the peer's traffic for it arrives on its own pair. Behind a firewall -open black-holes the flows we open")
	fs.DurationVar(&cfg.keepalive, "keepalive", 0, "send an empty authenticated datagram on the canonical address pair whenever nothing was sent to the peer for this `duration`, so a firewall or NAT keeps the pair open (25s behind one, as WireGuard advises); 0 is off")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: flowtun -peer ADDR:PORT -psk-file FILE [-range R] [-peer-range R] -addr INNER/LEN [flags]")
		fmt.Fprintln(stderr, "\nA server with one address and port gives only -peer-range (the client's -range); it answers each flow on the pair it came on.")
		fmt.Fprintln(stderr, "On IPv4, behind a NAT or without a prefix, spread over ports: the client -range ports=61000-61255, the server -peer-range nat-ports=256 (or ports=61000-61255 with no NAT).")
		fmt.Fprintln(stderr, "Behind a stateful firewall, open the canonical address and port (or use -keepalive 25s); flows move to their own pairs as the peer's traffic arrives there.")
		fmt.Fprintln(stderr, "Counters: -stats writes them as JSON at exit and on SIGUSR1; go doc examples/flowtun says what each one counts.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nEach key comes from one place: its flag, its file, or the environment\n($%s, $%s, which only the user running flowtun can read);\ntwo places for one key is an error.\n", pskEnv, hashKeyEnv)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected argument %q: flowtun takes flags only", fs.Arg(0))
	}
	cfg.addrs, cfg.routes = addrs, routes

	var err error
	if *port == 0 || *port > 65535 {
		return cfg, "", fmt.Errorf("-listen-port %d: give a UDP port from 1 to 65535 (the peer must know it)", *port)
	}
	cfg.listenPort = uint16(*port)
	if !cfg.peer.IsValid() {
		return cfg, "", errors.New("-peer is required: the peer's outer address and port, e.g. [2001:db8:ff::2]:51820")
	}
	if cfg.self.IsValid() && canonicalAddrPort(cfg.self) == canonicalAddrPort(cfg.peer) {
		return cfg, "", fmt.Errorf("-self and -peer are both %v: -self is this end's address, -peer the other end's", cfg.self)
	}
	given, err := psk.Load(fs, (*pskText)(&cfg.psk))
	if err != nil {
		return cfg, "", err
	}
	if !given {
		return cfg, "", fmt.Errorf("-psk-file or $%s is required (or -psk, which other users can read): 64 hex digits shared by both ends (make one with: head -c 32 /dev/urandom | xxd -p -c 32)", pskEnv)
	}
	if given, err = hashKey.Load(fs, &cfg.hashKey); err != nil {
		return cfg, "", err
	}
	if !given {
		if cfg.hashKey, err = hashKeyFromPSK(cfg.psk); err != nil {
			return cfg, "", err
		}
	}
	if cfg.ours, err = withPrefix(cfg.ours, prefix, *bits, "-prefix", "-range"); err != nil {
		return cfg, "", err
	}
	if cfg.theirs, err = withPrefix(cfg.theirs, peerPrefix, *bits, "-peer-prefix", "-peer-range"); err != nil {
		return cfg, "", err
	}
	if cfg.spread, err = parseSpread(*spread, !cfg.ours.IsZero(), !cfg.theirs.IsZero()); err != nil {
		return cfg, "", err
	}

	const maxMTU = 65535 - overhead - 40 - 8 // an IPv6 datagram's longest payload
	hasV6 := false
	for _, p := range slices.Concat(addrs, routes) {
		hasV6 = hasV6 || p.Addr().Is6()
	}
	switch {
	case cfg.mtu < 576 || cfg.mtu > maxMTU:
		return cfg, "", fmt.Errorf("-mtu %d: give 576 to %d (1420 fits a 1500-byte path)", cfg.mtu, maxMTU)
	case hasV6 && cfg.mtu < 1280:
		return cfg, "", fmt.Errorf("-mtu %d is below 1280, IPv6's minimum, but -addr or -route has IPv6", cfg.mtu)
	case cfg.batch < 1 || cfg.batch > 1024:
		return cfg, "", fmt.Errorf("-batch %d: give 1 to 1024", cfg.batch)
	case cfg.open && !cfg.spread.peerPrefix():
		return cfg, "", fmt.Errorf("-open declares the peer's range open, but we do not send to it (-spread %v): give -peer-range (or -peer-prefix), or drop -open", cfg.spread)
	case cfg.open && cfg.theirs.Ports.Translated:
		return cfg, "", errors.New("-open declares the peer's range open, but a NAT rewrites its ports (-peer-range nat-ports=N): they are known only once its traffic arrives; drop -open")
	case cfg.keepalive < 0:
		return cfg, "", fmt.Errorf("-keepalive %v: give a duration, e.g. 25s, or 0 for none", cfg.keepalive)
	case cfg.keepalive > 0 && cfg.keepalive < time.Second:
		return cfg, "", fmt.Errorf("-keepalive %v: give at least 1s (firewalls hold a UDP pair for 30 s and more), or 0 for none", cfg.keepalive)
	}
	return cfg, *statsPath, nil
}

// withPrefix adds the shorthand -prefix (named flag) to the range given
// with the flag named rangeFlag.
func withPrefix(r conn.Range, prefix netip.Prefix, bits int, flag, rangeFlag string) (conn.Range, error) {
	if !prefix.IsValid() {
		return r, nil
	}
	if r.Prefix.IsValid() {
		return r, fmt.Errorf("%s %v and %s %v both give a prefix: give one", flag, prefix, rangeFlag, r)
	}
	r.Prefix, r.Bits = prefix, bits
	return r, nil
}

// parseSpread reads -spread; auto spreads what the ranges given allow.
func parseSpread(s string, ours, peers bool) (spreadMode, error) {
	var m spreadMode
	switch s {
	case "auto":
		switch {
		case ours && peers:
			return spreadBoth, nil
		case ours:
			return spreadSrc, nil
		case peers:
			return spreadDst, nil
		}
		return spreadOff, nil
	case "off":
		return spreadOff, nil
	case "src":
		m = spreadSrc
	case "dst":
		m = spreadDst
	case "both":
		m = spreadBoth
	default:
		return 0, fmt.Errorf("-spread %q: give off, src, dst, both or auto", s)
	}
	if m.ourPrefix() && !ours {
		return 0, fmt.Errorf("-spread %s needs -range (or -prefix): our addresses or ports to send from", m)
	}
	if m.peerPrefix() && !peers {
		return 0, fmt.Errorf("-spread %s needs -peer-range (or -peer-prefix): the peer's addresses or ports to send to", m)
	}
	return m, nil
}

// The environment variables that may hold the keys. A process's
// environment is readable only by its user and root
// (/proc/PID/environ is mode 0400), unlike its command line.
const (
	pskEnv     = "FLOWTUN_PSK"
	hashKeyEnv = "FLOWTUN_HASH_KEY"
)

// pskText is the pre-shared key as a flag, a file or a variable gives
// it: 64 hex digits.
type pskText [PSKSize]byte

func (k pskText) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, k[:]), nil }

func (k *pskText) UnmarshalText(text []byte) error {
	if len(text) != 2*PSKSize {
		return fmt.Errorf("the key has %d characters, want %d hex digits", len(text), 2*PSKSize)
	}
	_, err := hex.Decode(k[:], text)
	return err
}

// writeStats writes s as one line of JSON to path ("-": stderr). A file
// is replaced whole, so a reader never sees half of it.
func writeStats(path string, s Stats, stderr io.Writer) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stderr.Write(b)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".flowtun-stats-*")
	if err != nil {
		return fmt.Errorf("-stats: %w", err)
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("-stats: %w", err)
	}
	return nil
}
