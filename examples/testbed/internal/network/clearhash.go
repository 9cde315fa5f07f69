package network

import (
	"fmt"
	"os"
)

// The hash-clearing wire: a tc program on the router's ingress that drops
// the flow hash (skb->hash) the sender's kernel attached to each packet, so
// that the router's qdisc computes its own from the headers it sees, as it
// would behind a real cable. A veth pair hands skb->hash from one namespace
// to the next, and kernel WireGuard sets it from the inner packet before
// encrypting: without this, the router isolates flows it could not tell
// apart on a real network (docs/experiment.md has the measurements).
//
// It costs nothing per packet beyond one helper call in the kernel, where
// the copying wire (wire.go) spends a CPU on two syscalls per frame: under
// the VM's emulation that CPU is what the tunnels under test and the
// latency probes need. The control mode (kernel WireGuard must be squeezed
// into one flow's share) proves it as it proves the copying wire.
//
// The testbed runs it as `testbed clear-hash IF...` in the router's
// namespace; the program stays attached after that process exits, until
// the namespace and its interfaces are deleted.

// ClearHashMain is the `clear-hash` subcommand.
func ClearHashMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: testbed clear-hash IF...\n\nAttaches a tc program to the ingress of each interface IF that clears the flow hash of every packet it receives.")
		return 2
	}
	for _, ifname := range args {
		if err := attachClearHash(ifname); err != nil {
			fmt.Fprintln(os.Stderr, "clear-hash:", err)
			return 1
		}
	}
	return 0
}
