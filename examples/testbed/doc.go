// Testbed measures what a VPN does to flow isolation at a real
// flow-queueing bottleneck, and what flowspread changes.
//
// # What it builds
//
// Three network namespaces in a line: client, router, server. The
// client's and the server's site prefixes (2001:db8:a::/48 and
// 2001:db8:b::/48) are routed through the router, whose egress towards
// each side is the bottleneck: an HTB shaper at -rate (20 Mbit/s by
// default) with fq_codel, cake (flows, triple-isolate, or the host-fair
// dual-srchost and dual-dsthost) or a plain FIFO.
// Where this kernel lacks the qdisc, the router is a VM instead of a
// namespace (see Running it).
//
// On each link to the router sits a wire (-wire) that hands the router
// packets without the flow hash (skb->hash) the sender's kernel attached.
// A veth pair carries that hash to the next namespace, and kernel
// WireGuard computes it from the inner packet; without the wire the router
// would isolate a tunnel's inner flows that no router on a real network
// can tell apart. The control mode proves the wire on every run. The wire
// is one of two kinds (-wire-kind):
//
//   - clear-hash (the default): a tc BPF program on the router's ingress,
//     attached by this same program re-executed as `testbed clear-hash IF`
//     in the router's namespace, calls bpf_set_hash_invalid on every
//     packet, so the router's qdisc hashes the headers it sees. It costs
//     no CPU worth measuring.
//   - copy: a fourth namespace between the hosts and the router, where
//     this program, as `testbed wire -a IF -b IF`, copies every Ethernet
//     frame between two interfaces through AF_PACKET sockets into fresh
//     packets, as a cable does. Under the VM's emulation that costs about
//     a CPU, which the tunnels and probes under test then lack; the report
//     gives the wire's queueing delay so that the shortage shows.
//
// Segmentation offloads are off on the links to the router, so that the
// bottleneck queues MTU-sized packets, as on a real line of that rate.
// The tunnel ends, the copying wire and the probes run at raised priority
// (nice): on a real network each host has a CPU of its own, and under
// emulation a probe or a tunnel end that waits for a CPU behind iperf3
// measures the machine, not the network. (Real-time priority measured
// better, but a Go program spinning at SCHED_FIFO can starve everything
// else for good: a run hung that way.)
//
// # Modes
//
// Each mode runs N bulk TCP flows (iperf3) and a sparse latency probe
// (irtt) in the tunnel's position, beside M bulk flows and a probe outside
// it, all from client to server at once:
//
//   - direct: no tunnel; every flow goes straight.
//   - one-flow: examples/flowtun without spreading: every inner flow
//     inside one outer flow between the two hosts' own addresses.
//   - spread: flowtun spreading each inner flow over its own outer address
//     pair, from a /64 of each site.
//   - control: kernel WireGuard. Through the wire its N flows must share
//     about one flow's share, 1/(M+1) of the link; if the router isolated
//     them instead, the wire leaks the hash and the run is invalid.
//
// With -vpn wireguard the one-flow and spread modes run WireGuard instead
// of flowtun: examples/wgspread, wireguard-go's device configured with the
// wg tool. One-flow runs it with -stock-bind (wireguard-go's own
// StdNetBind, the WireGuard users run today); spread runs it with this
// module's Bind, spreading over the same /64 of each site as flowtun. The
// report's title names the VPN, and its rows say which program ran.
//
// Before each mode's load both probes run alone for -idle (3 s): their
// idle medians are each path's own delay, and the difference is what the
// tunnel's two ends cost a round trip with no queue anywhere. Natively
// that is tens of microseconds; under the VM's emulation it is about 2 ms,
// and it grows under load, when the tunnel ends share two emulated CPUs
// with everything else. The report shows it beside the spread mode's
// latency gap, so that a reader can tell the tunnel's processing from the
// bottleneck's queueing.
//
// Each mode's measured time (-d, 20 s) is cut into -rounds rounds (3).
// The bulk flows run through all of it; the two probes run afresh in each
// round, at the same instants, so that a probe that shared a bulk flow's
// queue does so for one round only. The latency verdict
// (examples/testbed/internal/verdict) pairs the two probes instant by
// instant and judges the inner probe's p99 against the outer probe's over
// the same instants, round by round, leaving out the instants where the
// host stalled both (a busy host).
// When the host itself was the problem (the idle probes or the outer path
// already miss, the rounds disagree) the verdict is "inconclusive", never
// a false "not met" or "met".
//
// For each mode it reports the goodput of every bulk flow, Jain's fairness
// index over all of them, the tunnel's share (over the whole run and per
// round), the probes' round-trip times (median, p90, p99) inside and
// outside, loaded and idle, the latency verdict with the spread of its
// rounds, and the router qdisc's own statistics from `tc -s -j qdisc`
// (most flows queued at once, drops, ECN marks). results.json keeps the
// earlier figures (p99_gap_ms and the others) beside the rounds and the
// verdict, so runs stay comparable. It prints a table, writes results.json and draws
// latency-cdf.png and throughput.png (gonum.org/v1/plot) into -out.
//
// flowtun (or wgspread, with -vpn wireguard) is built from the checkout
// with go build before the run (on the host, when the run goes into the
// VM), or taken from -flowtun (-wgspread). Its ends run in the client and
// server namespaces, with fq_codel on their TUN
// devices. flowtun's counters (drops, failed authentications) go into
// results.json; wgspread tells its own only when it exits, after the
// measurement, so its rows have none.
//
// In the report, "wire" and "wire_kind" apply only when the router runs
// in a namespace; "router_vm" says when it ran in a VM.
//
// A row is invalid, and the exit status 1, when its result would mislead:
// the bulk flows did not fill the bottleneck (the tunnel or the machine
// could not keep up), the copying wire dropped frames, a probe got no
// reply, or the control shows that the wire leaks the hash. With
// -require-targets the exit status is 1 also when the spread mode misses
// its targets (inner probe's p99 within 2 ms of the outer probe's, over
// the same instants, Jain's index >= 0.95) or
// the one-flow mode was not squeezed towards one flow's share, as
// scripts/experiment asks, and 3 when the latency verdict was
// inconclusive: the host was too busy to tell, and the message says what
// to do (close other work, rerun); -latency-target=false leaves the
// latency gap reported but not required, as CI's scripts/vm-tests asks
// (under software emulation each pass through a user-space tunnel end
// costs about half a millisecond with no load, and a probe's round trip
// makes four). It refuses to start (exit status 2) without
// root or without a tool it needs, saying which package to install.
//
// # Behind stateful firewalls
//
// -firewall client puts a home router's stateful IPv6 firewall (RFC 6092
// style, nftables) in front of the client, -firewall both in front of the
// server too: replies and related packets pass (conntrack), ICMPv6 that
// IPv6 needs passes (RFC 4890: errors, Packet Too Big, echo, neighbour
// discovery from the link), all the protected host sends may go out, and
// from outside only the host's own address on the VPN's UDP port is open
// (on the server also the ports of the testbed's own iperf3 and irtt
// servers, which the paths outside the tunnel must reach). The rest is
// dropped and counted by a named counter. Conntrack keeps the kernel's
// defaults (UDP 30 s unreplied, 120 s stream); the report prints them.
//
// The rules filter what arrives on the host's own link to the router (an
// input chain in the host's namespace), not a forward chain in a fourth
// namespace between host and router. With the router in a VM (as on the
// build machines) that namespace would need its own tap, link prefix and
// routes on each side; and for the tunnel's traffic the two are the same
// firewall: behind a home router there is only this host, so conntrack
// sees the same 5-tuples, makes the same NEW/ESTABLISHED decisions and
// applies the same timeouts whether it runs in the router or in the host.
//
// Behind a firewall flowtun runs without -open, learning each flow's path
// (it sends a flow on the hosts' own addresses until the peer's traffic
// for it has come on the flow's own pair, and probes that pair), with
// -keepalive 25s on the hosts' own pair. With -firewall none it runs
// -open, as before, so earlier figures stay comparable; -open forces it
// behind a firewall too, to show the flows a firewall black-holes.
//
// In each mode with a tunnel, before the load, both ends open flows
// through it: 5 pings with distinct echo ids each (3 echoes) and a TCP
// connection (this program re-executed as `testbed tcp-check` in the
// namespace). The report gives per mode the flows attempted and completed
// from each end, the firewalls' drops, flowtun's probe copies and the
// paths it learnt open (from its -stats counters), TCP reorder events
// (nstat's TcpExtTCPSACKReorder, TCPTSReorder and TCPRenoReorder, both
// hosts summed), each over the checks and over the whole mode, and, with
// a firewall or -server-prefix=false, the distinct outer address pairs of
// the tunnel's datagrams each way on the client's link (an nftables set
// there: the packets the router forwards). A flow that does not get
// through makes the row invalid, except with -open behind a firewall,
// where it is what the run shows.
//
// -idle-check (off by default: it costs 35 s a mode) leaves a TCP
// connection through the tunnel idle for 35 s, past conntrack's 30 s for
// a pair that saw no traffic after its first 2 s and past flowtun's 20 s
// path timeout, then sends a segment from the server and a second later
// one from the client, and reports the retransmitted segments (nstat's
// TcpRetransSegs, both hosts). scripts/vm-tests runs it behind both
// firewalls.
//
// -server-prefix=false gives the server one address and no spread
// prefix: flowtun on the server runs without -prefix, with the client's
// -peer-prefix, and answers each flow on the pair it came on; the client
// spreads its sources. The pairs counted at the client's link then show
// one outer pair per inner flow each way, and the latency verdict whether
// fq_codel isolated them.
//
// # Other topologies, other dimensions
//
// Each behind a flag, off by default:
//
//   - -outer ipv4: the outer path is IPv4, on documentation ranges (RFC
//     5737): the client link 192.0.2.0/24, the server link
//     198.51.100.0/24, each host's own address on its link and no prefix
//     routed to it; the router forwards IPv4. The inner addresses stay
//     IPv6. With no prefix the spread mode spreads over ports only.
//   - -nat (with -outer ipv4): a fourth namespace, the home router,
//     stands between the client and the router, client ==c0--hl== home
//     ==hu--rc== router, and masquerades the client (Linux's nftables
//     masquerade on hu, NAT44) from 10.0.0.2 (RFC 1918) to its own
//     192.0.2.2. Flows the server opens through the tunnel reach the
//     client only over the mapping the client's traffic and its 25 s
//     keepalive keep open; the reachability checks open them from each
//     end. flowtun's server learns the client's translated ports
//     (-peer-range nat-ports=256), and -open is never given.
//   - -onlink: the client has no routed prefix. Its own address is on its
//     link's /64 (2001:db8:0:1::2), it spreads over 1024 addresses of
//     2001:db8:0:1:f::/80 inside that /64, and the router, which has no
//     route for it, finds each one by neighbour discovery; the client
//     answers with the kernel's proxy NDP (conn/host.AddNeighbourProxies,
//     run in its namespace as `testbed neighbour-proxies`). The report
//     counts the router's neighbour entries on that link after each mode
//     (`ip -6 neigh show dev rc` on the router), flushed before it. The
//     kernel answers a solicitation for a proxied address after a random
//     wait up to proxy_delay (0.8 s; RFC 4861 section 7.2.7), and the
//     router holds the first datagram to each new address meanwhile: each
//     inner flow starts up to that late, its measured seconds run past the
//     outside flows', and it gets the link to itself at their end (the
//     inner flows' goodput then adds up to more than the link carries).
//     -proxy-delay 0 answers at once, and measures the rest of the
//     topology without that start-up cost.
//   - -dimension addresses|ports|both: what the spread mode spreads each
//     inner flow over: outer address pairs (the default), the client's
//     outer source ports 61000-61255 from its one address (the server
//     keeps one address and one port and answers each flow on the port
//     pair it came on), or both. The spread row names it: "spread
//     (ports)".
//   - -qdisc cake-dual-srchost, cake-dual-dsthost: cake fair between
//     source (destination) addresses first, then between each one's
//     flows. Cake counts every outer address as a host, so a tunnel
//     spreading over addresses outweighs the hosts beside it. With any
//     cake kind the spread row gets a share check against the direct
//     mode, which carries the same flows without a tunnel: the tunnel's
//     share must stay within the direct mode's + 0.05 (required with
//     -require-targets, which then needs -modes direct,spread).
//
// # Running it
//
// As root, from the repository:
//
//	scripts/install-deps
//	go run ./examples/testbed
//
// Where the kernel lacks the qdisc (as on the build machines), only the
// router runs in a VM booting Debian's stock kernel (scripts/vm), and the
// client and server namespaces, with their tunnels and loads, stay on this
// machine (-vm=auto picks this; -vm=router forces it). The VM's two
// network cards sit on tap devices in the hosts' namespaces, so every
// frame crosses from one kernel into the other through QEMU, as over a
// cable: no flow hash can reach the router, and no wire is needed. Only
// the router is emulated; the tunnel ends run at this machine's speed. The
// control mode needs kernel WireGuard on this machine, and is skipped
// where it has none: it is not needed, since no hash can leak.
//
// -vm=always runs everything in the VM instead, with the wire between its
// namespaces (-wire, -wire-kind) and the control; -vm=auto picks it where
// the kernel has the qdisc but lacks only WireGuard. Under the VM's
// software emulation a pass through a user-space tunnel end costs about
// half a millisecond, so the latency target is out of reach there.
// -vm=never refuses to use a VM.
//
// The default experiment (fq_codel, 20 Mbit/s, 4 flows inside and 4
// outside, 20 s per mode in 3 rounds) takes about 2 minutes with the VM's
// boot; scripts/experiment runs it with 15 s per mode. -d is the whole
// measured time, not each round's, so more rounds cost no more time.
//
// The namespaces are named fstb-XXXXXXXX-{client,router,server} (and -wire, -home) and
// removed at the end, also after Ctrl-C. A run killed outright leaves them
// behind: `ip netns list | grep fstb-` shows them, `ip netns del NAME`
// removes each.
//
// # The code
//
// The program is a thin main (flags, placement, the experiment's steps)
// over packages with one job each, under internal/: network (the
// namespaces, the router in a namespace or a VM, the wire and the
// re-executed helpers `testbed wire`, `testbed clear-hash`, `testbed
// router-agent` and `testbed neighbour-proxies`), shaping (the qdiscs and their statistics), load
// (iperf3 and irtt and their parsers), tunnel (the VPNs under test),
// firewall (the stateful firewalls and the count of outer pairs), reach
// (the flows opened through a tunnel, and the re-executed helper `testbed
// tcp-check`),
// verdict (the pairwise latency verdict) and report (results.json, the
// table, the plots). Namespaces and the processes in them are the
// module's internal/netns, which the tests' helpers share.
//
// # Adding a tunnel
//
// A tunnel implements tunnel.Tunnel: Start brings it up between the
// client and server namespaces and returns the inner addresses the loads
// use; Stop tears it down. Register it as a mode's NewTunnel in modes.go.
package main
