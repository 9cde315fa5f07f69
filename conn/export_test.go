package conn

// The scale benchmarks' peers, for BenchmarkSend in package conn_test.
var (
	BenchPeerList   = benchPeerList
	BenchPeerCounts = benchPeerCounts
	BenchPeerSpace  = benchPeerSpace
)

const BenchPeerStride = benchPeerStride

// DropSendRing makes c send a batch from several sockets with a
// sendmmsg per socket, as where the kernel has no io_uring.
func DropSendRing(c *FlowSpreadConn) {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	if c.ring != nil {
		c.ring.close()
		c.ring = nil
	}
}

// ECNSockets returns how many sockets of c send ECN-capable flows'
// spread datagrams by themselves (openECNSockets).
func ECNSockets(c *FlowSpreadConn) int { return len(c.ecnConns) }
