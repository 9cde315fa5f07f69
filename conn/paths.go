package conn

// Observe tells the conn that a datagram it delivered was authentic and
// carried the inner flow f: info is what the read returned for it, f the
// [FlowSpreadConn.Classify] of its plaintext. Only the VPN can tell an
// authentic datagram from a forged one, so only what it observes changes
// where the conn sends: when the datagram came on the spread pair of f
// (the peer's range address for f to ours), the pair is open, and the
// flow's datagrams to the peer go on it from now on (see [Peer.Open]).
//
// Call it after authenticating, for every datagram or at least once a
// second per flow. It is safe for concurrent use and does not allocate.
func (c *FlowSpreadConn) Observe(info *RecvInfo, f Flow) {
	// Issue 12: path learning. Filled in by the path-state change.
}
