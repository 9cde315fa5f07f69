package main

// sparseFirst writes into order the indices 0..len(hashes)-1 of a batch,
// packets of flows that have a single packet in the batch first, then the
// others in their original order, and returns order[:len(hashes)] and
// how many of it are singletons. hashes[i] is packet i's flow key: any
// value its flow's packets share and other flows' packets rarely do.
//
// A tunnel end drains its queues in batches, and under load a batch holds
// a burst of a bulk flow: a sparse flow's packet (a latency probe, a DNS
// query, a TCP ACK) in the middle of it would wait for every packet ahead
// of it to be encrypted and sent, or written to the TUN device, as in a
// FIFO. fq_codel serves new sparse flows first; so does this, within one
// batch. A flow's own packets keep their order.
//
// It does not allocate: order must have room for len(hashes) indices. The
// cost is quadratic in the batch, which is at most a few dozen packets.
func sparseFirst(order []int, hashes []uint64) (_ []int, singles int) {
	n := len(hashes)
	order = order[:n]
	front, back := 0, n
	// Singletons fill the front in their order; the rest are collected at
	// the back in reverse, then turned around.
	for i := n - 1; i >= 0; i-- {
		if !single(hashes, i) {
			back--
			order[back] = i
		}
	}
	for i := range n {
		if single(hashes, i) {
			order[front] = i
			front++
		}
	}
	return order, front
}

// single reports whether hashes[i] occurs once in hashes.
func single(hashes []uint64, i int) bool {
	for j, h := range hashes {
		if j != i && h == hashes[i] {
			return false
		}
	}
	return true
}
