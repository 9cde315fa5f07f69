// Command flowtun is a small point-to-point tunnel: a TUN device at each
// end, inner IPv4 and IPv6 packets sealed with ChaCha20-Poly1305 under a
// pre-shared key, carried in UDP over a [conn.FlowSpreadConn]. Each inner
// flow gets its own outer IPv6 address pair, so fq_codel or cake on the
// path queue the tunnel's flows apart instead of as one. It is meant to be
// read in one sitting, as a model of how a VPN uses flowspread.
//
// # How it uses the library
//
// The TUN reader takes a batch of inner packets; for each it calls
// [conn.FlowSpreadConn.Classify] on the plaintext, seals the packet in
// place and sends the batch with [conn.FlowSpreadConn.WriteBatch], which
// puts each datagram on its flow's address pair and coalesces runs of one
// flow with UDP GSO. The network reader takes a batch with
// [conn.FlowSpreadConn.ReadBatch] (every datagram from the peer's range
// reads as from its one canonical address), checks and opens each, applies
// the outer ECN mark with [conn.FlowSpreadConn.Decapsulate] (RFC 6040) and
// writes the inner packet to the TUN device. Within each batch, both
// ways, packets of flows that have only one packet in it go first, as
// fq_codel serves new sparse flows first: a probe or an ACK does not wait
// for a bulk flow's burst to be encrypted and sent, or decrypted and
// written to the TUN device, inside the tunnel end; each flow keeps its
// own order. Sparse packets are sealed and sent ahead of the rest of
// their batch; received datagrams of a spreading peer are ordered by
// their outer address pair before any is opened. Buffers
// are allocated at start: the data path allocates nothing.
//
// # Running it
//
// Each end needs a TUN device (root, or CAP_NET_ADMIN) and, to spread its
// sources, an IPv6 prefix routed to it: flowtun makes the prefix local
// with an AnyIP route (ip -6 route add local PREFIX dev lo) and removes it
// at exit. Between hosts A (2001:db8:ff::a, prefix 2001:db8:a::/64) and B
// (2001:db8:ff::b, prefix 2001:db8:b::/64):
//
//	A# flowtun -name tun0 -listen-port 51820 -peer '[2001:db8:ff::b]:51820' \
//	     -prefix 2001:db8:a::/64 -peer-prefix 2001:db8:b::/64 -psk-file psk \
//	     -addr 198.51.100.1/24,fd00:99::1/64
//	B# flowtun -name tun0 -listen-port 51820 -peer '[2001:db8:ff::a]:51820' \
//	     -prefix 2001:db8:b::/64 -peer-prefix 2001:db8:a::/64 -psk-file psk \
//	     -addr 198.51.100.2/24,fd00:99::2/64
//
// The PSK file holds 64 hex digits (head -c 32 /dev/urandom | xxd -p -c 32).
// Each key comes from one place: -psk-file or -hash-key-file, the
// environment (FLOWTUN_PSK, FLOWTUN_HASH_KEY), or -psk and -hash-key;
// a key given two ways is an error, not a choice. Prefer a file or the
// environment: a command line is readable by every user of the host (ps,
// /proc/PID/cmdline), a process's environment only by its user and root.
//
// -peer is the peer's canonical address: the one its unspread datagrams
// come from, so the source address of its route to us. -self is ours, by
// default the source address of our route to the peer; given, it must
// be an address of this host (of an interface, or inside a local route)
// and -listen-port, or flowtun refuses to start: a command copied from
// the peer, or with -self and -peer swapped, would have both ends seal
// with one key (see below). Behind a NAT that rewrites our address, give
// the public one with -nat, which skips that check. Both ends must
// agree on -bits, -mtu, the prefixes and the hash key (by default derived
// from the PSK). Run preflight (examples/preflight) to check a host.
//
// -spread says what is spread: both (the default when both prefixes are
// given), off (one outer flow between the canonical addresses, IPv4 works
// too), or, where only one end has a prefix, src at that end and dst at
// the other: flows leave the prefixed end from many sources and reach it
// at many destinations, and the other end keeps one address.
//
// A server with one address needs no prefix: give it only the client's
// range as -peer-prefix (-spread dst), and the client its -prefix with no
// -peer-prefix (src). The server answers each of the client's flows on
// the pair that flow arrived on, so both directions are isolated,
// although only the client spreads. This is the usual setup, a VPS.
//
// # Stateful firewalls
//
// A home router's firewall (RFC 6092) drops what arrives on an outer pair
// nobody inside has sent on, and users open one address and port for the
// VPN: the canonical one. So flowtun learns which pairs are open. The
// network reader reports every datagram that authenticated and is no
// replay, and only those, to [conn.FlowSpreadConn.Observe] with its inner
// flow; a forged or replayed datagram never moves where we send. A flow
// goes on the canonical pair until the peer's traffic for it has arrived
// on its own pair (within the last 20 s, [conn.DefaultPathTimeout]),
// then on that pair. Meanwhile a copy of a datagram goes on the spread
// pair at most once a second per pair (Config.Probe): it opens our own
// firewall for the peer's answer there, and the peer, seeing the flow on
// it, moves the flow too. The peer's replay window drops whichever copy
// comes second. Measured through an nftables firewall in front of the
// client (TestFirewall), every flow opened from either side completes.
//
// -open declares the peer's whole range reachable (no stateful firewall
// in front of it, or all of its range opened): flows go on their pairs at
// once. Behind a firewall that does not let the range in, it black-holes
// every flow the other side opens (TestFirewall, "server open").
//
// -keepalive 25s sends an authenticated empty datagram on the canonical
// pair whenever we have sent the peer nothing for 25 s, as WireGuard's
// persistent keepalive, so that a firewall or NAT in front of us keeps
// the canonical pair and the peer can always reach us there. It is off
// by default. Any datagram counts as traffic, also one on a spread pair:
// where the canonical port is not opened in the firewall, the canonical
// pair can lapse while all flows run on their own pairs, and the peer's
// new flows then wait for our next datagram on it.
//
// # Counters
//
// Counters (see [Stats]) are written as one JSON line at exit and on
// SIGUSR1, to standard error or to the -stats file. The tunnel's own:
// inner packets read from the TUN device and delivered to it; datagrams
// sent and received; drops by reason (malformed, failed authentication,
// replayed, too old, not an IP packet); keepalives sent and received;
// the addresses of our range that sent (addresses_used). Under "conn",
// the outer view ([conn.Stats], under its Go field names):
// SentPerAddress, datagrams per source address of our range;
// SentWaiting, those that went on the canonical pair because their own
// was not known open yet; SentProbes, the copies sent on spread pairs;
// PathsOpened, how often a flow's pair became known open. A probe copy
// that arrives besides its original counts once as dropped_replay at
// the peer.
// SIGINT and SIGTERM stop the tunnel and remove its device and local
// route.
//
// FLOWTUN_CPUPROFILE=PREFIX writes a CPU profile of the whole run to
// PREFIX.PID.pprof, for go tool pprof.
//
// # Wire format and keys
//
// A datagram is a type byte (1), an 8-byte big-endian counter, and the
// ChaCha20-Poly1305 (RFC 8439) ciphertext of the inner packet with its
// 16-byte tag; the 9-byte header is the additional data, the nonce is 4
// zero bytes and the counter. Each direction has its own key, derived from
// the PSK with HKDF-SHA-256 (RFC 5869) under the label "flowtun a->b" or
// "flowtun b->a" and both canonical addresses, "a" being the lower one:
// both ends agree without a message, and ends that disagree on the
// addresses never seal with one key. Ends that agree on them but both
// claim the same one as their own (a copied command) would derive one
// send key, and nonces would repeat as soon as one end had sent more
// datagrams than the nanoseconds between the two starts: no derivation
// can tell identical configs apart, so flowtun refuses a -self that is
// not this host's. The flow hash key is derived from the PSK too, under
// its own label.
//
// The counter starts at the sender's wall clock in nanoseconds and counts
// up, one per datagram; when it has fallen more than a second behind the
// clock (it counts datagrams, the clock nanoseconds) it jumps up to the
// clock, never back. A restarted end goes on above every counter it sent
// before, so a nonce never repeats under a key (unless the clock steps
// back by more than the tunnel was down), and every counter is within a
// second of the moment it was sealed, which the replay window uses.
//
// # Replay protection
//
// The receiver keeps a sliding window of the last 1984 counters in a
// 2048-bit bitmap of 64-bit blocks (RFC 4303 section 3.4.3, with RFC 6479's
// ring of blocks). When the sender's counter jumps to its clock, the
// window keeps the ring from before the jump beside the new one, so
// datagrams sealed before the jump and overtaken on the way are still
// taken once; the jump after retires it. A counter is checked before
// decryption and recorded only after it authenticates, so forged counters
// never move the window. Malformed, unauthentic, replayed and too-old
// datagrams are dropped and counted, each under its own reason.
//
// A restarted end remembers no counter, so its window starts at its clock
// less 10 seconds (maxClockSkew): a datagram sealed more than that before
// the restart is dropped as too old, whoever replays it. What an attacker
// recorded in those last 10 seconds can be replayed into the restarted
// end, each datagram once, until fresh datagrams from the peer move the
// window past it. The ends' clocks must agree within the same 10 seconds
// (NTP keeps them within milliseconds): a peer whose clock is further
// behind is not heard after we restart until its clock has caught up.
//
// # Limits
//
// There is no handshake: no forward secrecy, no key rotation beyond
// changing the PSK, and a restart opens the 10-second replay above. One
// peer, with a fixed address: no roaming. TUN reads and writes are one packet
// per system call (no offloads), which bounds throughput: see
// BenchmarkTunnelTCP.
package main
