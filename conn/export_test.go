package conn

// The scale benchmarks' peers, for BenchmarkSend in package conn_test.
var (
	BenchPeerList   = benchPeerList
	BenchPeerCounts = benchPeerCounts
	BenchPeerSpace  = benchPeerSpace
)

const BenchPeerStride = benchPeerStride
