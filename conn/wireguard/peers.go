package wireguard

import (
	"net/netip"
	"slices"

	"github.com/flowspread/flowspread/conn"
)

// SetPeer adds p to the peers the Bind spreads to, or changes the one
// whose canonical address is p.Addr, while wireguard-go runs: the spread
// options of a peer that `wg set` added (its endpoint must be p.Addr), or
// new options for one already there. While the Bind is open the conn
// validates p and swaps it in without stopping traffic (see
// [conn.FlowSpreadConn.SetPeer]); on an error nothing changes. While it
// is closed p is kept for the next Open, which validates it with the
// rest of the configuration. Either way a later Open (wireguard-go
// reopens the Bind when its listen port changes) keeps it.
func (b *Bind) SetPeer(p conn.Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.c.Load(); c != nil {
		if err := c.SetPeer(p); err != nil {
			return err
		}
		b.cfg.Peers = c.Peers()
		return nil
	}
	b.cfg.Peers = slices.Clone(b.cfg.Peers)
	if i := peerIndex(b.cfg.Peers, p.Addr); i >= 0 {
		b.cfg.Peers[i] = p
	} else {
		b.cfg.Peers = append(b.cfg.Peers, p)
	}
	return nil
}

// RemovePeer stops spreading to the peer whose canonical address is addr,
// and reports whether there was one. wireguard-go may keep the peer: its
// datagrams then go unspread to addr, as to any peer the Bind does not
// spread to.
func (b *Bind) RemovePeer(addr netip.AddrPort) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.c.Load(); c != nil {
		if !c.RemovePeer(addr) {
			return false
		}
		b.cfg.Peers = c.Peers()
		return true
	}
	i := peerIndex(b.cfg.Peers, addr)
	if i < 0 {
		return false
	}
	b.cfg.Peers = slices.Delete(slices.Clone(b.cfg.Peers), i, i+1)
	return true
}

// Peers returns the peers the Bind spreads to, as the conn holds them
// while open (with defaults filled in), or as configured while closed.
func (b *Bind) Peers() []conn.Peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.c.Load(); c != nil {
		return c.Peers()
	}
	return slices.Clone(b.cfg.Peers)
}

// peerIndex returns the index of the peer whose canonical address is
// addr, or -1. A v4-mapped address names its IPv4 peer, as in the conn.
func peerIndex(peers []conn.Peer, addr netip.AddrPort) int {
	unmap := func(ap netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	}
	want := unmap(addr)
	return slices.IndexFunc(peers, func(p conn.Peer) bool { return unmap(p.Addr) == want })
}
