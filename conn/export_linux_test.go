package conn

import (
	"slices"

	"github.com/flowspread/flowspread/flowaddr"
)

// RingSendto reports whether c's send ring sends datagrams without a
// control message with IORING_OP_SEND, and the ECN each of the range's
// sockets marks by itself (its IPV6_TCLASS option).
func RingSendto(c *FlowSpreadConn) (bool, []flowaddr.ECN) {
	c.ring.mu.Lock()
	defer c.ring.mu.Unlock()
	return c.ring.sendto, slices.Clone(c.ring.tclass[1:])
}

// BreakRingSendto makes the kernel refuse c's IORING_OP_SEND entries, as
// one before Linux 6.1 does: their destination is too long.
func BreakRingSendto(c *FlowSpreadConn) {
	c.ring.mu.Lock()
	defer c.ring.mu.Unlock()
	c.ring.sendtoSkew = 200
}
