// Command wgspread is a userspace WireGuard interface, like wireguard-go,
// whose inner flows each leave on their own outer address and port pair,
// so that fq_codel or cake on the path queue the tunnel's flows apart:
// over IPv6 addresses of a prefix routed to the host, over UDP ports (on
// IPv4 and IPv6, through a NAT, with no prefix), or both. It is
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
//	-range R                      our widened endpoint (conn.ParseRange
//	                              form): prefix=P,bits=N for addresses of an
//	                              IPv6 prefix routed to this host,
//	                              ports=FIRST-LAST for source ports, or both
//	-peer-range 'ADDR:PORT=R'     a peer's canonical endpoint and its -range;
//	                              nat-ports=N in place of ports= for a peer
//	                              behind a NAT that rewrites its N ports;
//	                              repeat it for each peer
//	-prefix 2001:db8:a::/64       shorthand for -range prefix=2001:db8:a::/64
//	-peer-prefix '[2001:db8:ff::2]:51820=2001:db8:b::/64'
//	                              shorthand for -peer-range with a prefix
//	-bits 10                      spread over 2^bits addresses of each prefix
//	                              that gives no bits= of its own
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
// -peer-range or -peer-prefix (ADDR:PORT alone for a peer that does not
// spread): the adapter reads every datagram of a peer's
// range as coming from that address, so wg show reports it however many
// outer addresses the peer sends from. Datagrams from any other source are
// handed to wireguard-go, which authenticates them and roams a peer that
// moved to its new address, as wireguard-go does; until that address is
// the peer's -peer-prefix endpoint, traffic to it goes unspread. Both ends
// must agree on -bits, the hash key and each other's range. fwmark is not
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
// # IPv4, NAT, no prefix: spreading over ports
//
// A client C behind a NAT (Linux masquerade, a home router) and a server
// S with one address and one port. C sends each flow from its own source
// port; the NAT gives each a port of its own, and S answers each flow on
// the port pair it last arrived on, which it learns from C's
// authenticated traffic, so both directions are spread:
//
//	C# wgspread -range ports=61000-61255 -peer-range 192.0.2.2:51820 -hash-key-file k.hex wg0
//	C# wg set wg0 listen-port 51820 private-key c.key peer S_PUB endpoint 192.0.2.2:51820 allowed-ips 10.0.0.2/32 persistent-keepalive 25
//	S# wgspread -peer-range '198.51.100.1:51820=nat-ports=256' -hash-key-file k.hex wg0
//	S# wg set wg0 listen-port 51820 private-key s.key peer C_PUB allowed-ips 10.0.0.1/32
//
// 198.51.100.1:51820 is where the NAT maps C's listen port (masquerade
// and most home NATs keep a port that is free): the endpoint wg show
// reports for C. Without the -peer-range for C, S still works but does
// not spread: each datagram from another of C's translated ports looks
// like a peer that moved, wireguard-go follows the latest, and S sends
// everything to that one port.
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
// -peers-file names a file of peers, one a line, as -peer-prefix or
// -peer-range takes them, then options (bits=N for a prefix, open); #
// starts a comment:
//
//	[2001:db8:ff::2]:51820=2001:db8:b::/64  open
//	[2001:db8:ff::3]:51820=2001:db8:c::/64  bits=8
//	[2001:db8:ff::4]:51820=prefix=2001:db8:d::/64,bits=8,ports=61000-61255
//	198.51.100.9:51820=nat-ports=256         # behind a NAT, never open
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
