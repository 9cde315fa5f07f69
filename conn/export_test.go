package conn

// The scale benchmarks' peers, for BenchmarkSend in package conn_test.
var (
	BenchPeerList   = benchPeerList
	BenchPeerCounts = benchPeerCounts
	BenchPeerSpace  = benchPeerSpace
)

const BenchPeerStride = benchPeerStride

// UsesSendRing reports whether c sends batches from several sockets
// through its io_uring; DropSendRing makes it use sendmmsg per socket.
func UsesSendRing(c *FlowSpreadConn) bool { return c.ring != nil }
func DropSendRing(c *FlowSpreadConn) {
	c.sockMu.Lock()
	defer c.sockMu.Unlock()
	if c.ring != nil {
		c.ring.close()
		c.ring = nil
	}
}
