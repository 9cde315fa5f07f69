package conn

import (
	"errors"
	"net/netip"
)

// SetPeer adds p to the conn's peers, or changes the peer whose canonical
// address is p.Addr, while the conn runs: p is validated as Config.Peers
// are, against the other peers. Reads and writes in flight finish with
// the peer table they started with; none waits on a lock and none loses
// a datagram of a peer that stays.
func (c *FlowSpreadConn) SetPeer(p Peer) error {
	return errors.New("conn: SetPeer: not implemented yet")
}

// RemovePeer removes the peer whose canonical address is addr, and
// reports whether there was one.
func (c *FlowSpreadConn) RemovePeer(addr netip.AddrPort) bool {
	return false
}

// Peers returns the conn's peers as they are now.
func (c *FlowSpreadConn) Peers() []Peer {
	return nil
}
