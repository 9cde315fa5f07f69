// Package network builds the testbed's network: a client and a server
// namespace with a router between them, whose egress is the bottleneck,
//
//	client ==c0--rc== router ==rs--s0== server
//
// The router is one of two kinds. In a namespace, between the hosts and
// the router sits a wire that hands the router packets without the flow
// hash (skb->hash) the sender's kernel attached, as a real link does: a
// veth pair alone carries that hash across namespaces, and the router
// would then isolate flows it could not tell apart on a real network. In
// a VM (scripts/vm, Debian's stock kernel), every frame crosses from this
// kernel into the VM's through QEMU, as over a cable, and no wire is
// needed; the VM runs this same program as `testbed router-agent DIR`,
// which sets the router up and runs the testbed's tc commands.
//
// [Options] choose the address plan: IPv6 with sites routed to the hosts
// (the default), an IPv4 outer path, a home router masquerading the
// client (NAT44) between it and the router, or a client whose addresses
// are on-link, which the router resolves by neighbour discovery.
//
// The re-executed helpers live here too: `testbed wire` (the copying
// wire), `testbed clear-hash` (the hash-clearing tc program), `testbed
// router-agent` and `testbed neighbour-proxies` (the on-link client's
// proxy NDP); the program dispatches to [WireMain], [ClearHashMain],
// [RouterAgentMain] and [NeighbourProxiesMain].
package network
