// Command wgspread is a userspace WireGuard interface, like wireguard-go,
// whose inner flows each leave on their own outer IPv6 address pair, so
// that fq_codel or cake on the path queue the tunnel's flows apart. It is
// wireguard-go's device with the [github.com/flowspread/flowspread/conn/wireguard.Bind] and
// [github.com/flowspread/flowspread/conn/wireguard.WrapTUN]
// adapter of this module, configured with the standard wg tool.
//
// # Running it
//
//	wgspread [flags] INTERFACE
//
// creates the TUN interface INTERFACE, opens the UAPI socket
// /var/run/wireguard/INTERFACE.sock that wg(8) talks to, and runs in the
// foreground until SIGINT or SIGTERM, or until the interface is deleted
// (ip link del INTERFACE). At exit the interface, the socket and the local
// route it added are gone. Private key, listen port and peers come from
// wg set or wg setconf, as usual; the interface's inner addresses from ip
// addr add, and ip link set INTERFACE up starts it.
//
// The flags say what wg cannot:
//
//	-prefix 2001:db8:a::/64       our spread prefix, routed to this host
//	-peer-prefix '[2001:db8:ff::2]:51820=2001:db8:b::/64'
//	                              a peer's canonical endpoint and its spread
//	                              prefix; repeat it for each peer
//	-bits 10                      spread over 2^bits addresses of each prefix
//	-hash-key-file FILE           the flow hash key, 32 hex digits, the same
//	                              at both ends; or $WGSPREAD_HASH_KEY, or
//	                              -hash-key HEX, which every local user can
//	                              read in /proc/PID/cmdline
//	-open                         every peer's whole range is reachable (no
//	                              stateful firewall in front of it): flows
//	                              go on their spread pairs at once
//	-peers-file FILE              more peers, one a line, reread on SIGHUP
//	                              (see below)
//	-symmetric=true               one outer pair for both directions of a flow
//	-local-route=true             add ip -6 route add local PREFIX dev lo
//	-stock-bind                   wireguard-go's own StdNetBind, unspread: a
//	                              baseline for comparisons
//
// Each peer's endpoint in wg must be the canonical address of its
// -peer-prefix (or of a -peer-prefix with no prefix, ADDR alone, for a
// peer that does not spread): the adapter reads every datagram of a peer's
// range as coming from that address, so wg show reports it however many
// outer addresses the peer sends from. Datagrams from any other source are
// handed to wireguard-go, which authenticates them and roams a peer that
// moved to its new address, as wireguard-go does; until that address is
// the peer's -peer-prefix endpoint, traffic to it goes unspread. Both ends
// must agree on -bits, the hash key and each other's prefix. fwmark is not
// supported.
//
// Between hosts A (2001:db8:ff::1, prefix 2001:db8:a::/64) and B
// (2001:db8:ff::2, prefix 2001:db8:b::/64), with k.hex holding the same
// 32 hex digits at both ends:
//
//	A# wgspread -prefix 2001:db8:a::/64 -peer-prefix '[2001:db8:ff::2]:51820=2001:db8:b::/64' -hash-key-file k.hex wg0
//	A# wg set wg0 listen-port 51820 private-key a.key peer B_PUB endpoint '[2001:db8:ff::2]:51820' allowed-ips 10.0.0.2/32
//	A# ip addr add 10.0.0.1/24 dev wg0 && ip link set wg0 up
//
// and the same at B with the roles swapped.
//
// # Firewalls
//
// By default a flow goes on its spread pair only once the peer's own
// traffic for that flow has arrived on it; until then it goes to the
// peer's endpoint, with a probe copy on its spread pair at most once a
// second, which opens our firewall for the peer's answer there. So two
// ends behind home routers that open only the VPN's address and port
// (RFC 6092) reach each other on every flow, and move each flow to its
// own pair after one round trip. -open skips the wait for peers whose
// whole range is reachable.
//
// # Changing peers while it runs
//
// -peers-file names a file of peers, one a line, as -peer-prefix takes
// them, then options (bits=N, open); # starts a comment:
//
//	[2001:db8:ff::2]:51820=2001:db8:b::/64  open
//	[2001:db8:ff::3]:51820=2001:db8:c::/64  bits=8
//	192.0.2.7:51820                         # does not spread
//
// kill -HUP rereads it and applies it while traffic flows: a new line adds
// a peer's spread options, a changed one changes them, a removed one
// stops spreading to the peer (a -peer-prefix peer goes back to its
// command-line options). A file with an error changes nothing, and the
// log says why. Change a peer's prefix at both ends: a peer that spreads
// from a prefix this end no longer knows looks like a stranger per
// address, and wireguard-go roams to one of them. The peers themselves (keys, endpoints, allowed IPs) stay
// wg's: add a peer with wg set, and its spread options in the file.
//
// # Logging
//
// LOG_LEVEL=verbose (or debug), error (the default) or silent sets
// wireguard-go's log level, as for wireguard-go.
//
// # Profiling
//
// WGSPREAD_CPUPROFILE=PREFIX writes a CPU profile of the whole run to
// PREFIX.INTERFACE.pprof, for go tool pprof.
package main
