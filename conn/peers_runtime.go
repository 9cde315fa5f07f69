package conn

import (
	"fmt"
	"net/netip"
	"slices"
)

// SetPeer adds p to the conn's peers, or changes the peer whose canonical
// address is p.Addr, while the conn runs. p is validated as Config.Peers
// are, against the other peers and our Prefix; on an error nothing
// changes.
//
// The conn swaps in a new peer table: reads and writes in flight finish
// with the table they started with, none waits on a lock, and the peers
// that stay lose no datagram. A peer whose Addr, Prefix and Bits stay
// keeps what was learned of its paths (see [FlowSpreadConn.Observe]);
// a changed range starts learning afresh. Building the table costs time
// and memory in proportion to the number of peers, so a control plane
// with thousands of peers should not call it per packet.
func (c *FlowSpreadConn) SetPeer(p Peer) error {
	c.peersMu.Lock()
	defer c.peersMu.Unlock()
	old := c.peers.Load()
	list := slices.Clone(old.list)
	if i := old.indexOf(p.Addr); i >= 0 {
		list[i] = p
	} else {
		list = append(list, p)
	}
	return c.swapPeers(old, list)
}

// RemovePeer removes the peer whose canonical address is addr, and
// reports whether there was one. Datagrams from its addresses are dropped
// from then on (or, with AcceptUnknown, delivered as from a stranger).
func (c *FlowSpreadConn) RemovePeer(addr netip.AddrPort) bool {
	c.peersMu.Lock()
	defer c.peersMu.Unlock()
	old := c.peers.Load()
	i := old.indexOf(addr)
	if i < 0 {
		return false
	}
	list := slices.Delete(slices.Clone(old.list), i, i+1)
	if err := c.swapPeers(old, list); err != nil {
		// A subset of valid peers is valid, and its table builds.
		panic(fmt.Sprintf("conn: RemovePeer(%v): %v", addr, err))
	}
	return true
}

// Peers returns the conn's peers as they are now, with the defaults
// filled in (Bits), in the order they were added.
func (c *FlowSpreadConn) Peers() []Peer {
	return slices.Clone(c.peers.Load().list)
}

// swapPeers validates list, builds its table reusing what old holds for
// unchanged peers, and swaps it in. The caller holds peersMu.
func (c *FlowSpreadConn) swapPeers(old *peerTable, list []Peer) error {
	valid, err := validatePeers(list, c.prefix, addressedPeer)
	if err != nil {
		return fmt.Errorf("conn: %w", err)
	}
	t, err := buildPeerTable(valid, c.layout, c.permKey, c.ourBits, old)
	if err != nil {
		return fmt.Errorf("conn: %w", err)
	}
	c.peers.Store(t)
	return nil
}

// addressedPeer names peers by their canonical address in an error
// message: "peer [2001:db8::1]:51820" (Prefix), since a caller of SetPeer
// knows them by address, not by a place in a list.
func addressedPeer(peers []Peer, i int, field string) string {
	if field == "" {
		return fmt.Sprintf("peer %v", peers[i].Addr)
	}
	return fmt.Sprintf("peer %v (%s)", peers[i].Addr, field)
}

// indexOf returns the index in t.list of the peer whose canonical address
// is addr, or -1. A zone or a v4-mapped form names the same peer, as in
// Config.validate.
func (t *peerTable) indexOf(addr netip.AddrPort) int {
	canon := canonicalPeerAddr(addr)
	for i, p := range t.list {
		if canonicalPeerAddr(p.Addr) == canon {
			return i
		}
	}
	return -1
}
