package testutil

import (
	"net"
	"net/netip"
	"testing"
)

// ListenUDP opens a UDP socket bound to at inside n, closed when t ends.
func (n *Netns) ListenUDP(t testing.TB, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(at))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// DialUDP opens a UDP socket inside n connected to to, closed when t ends.
func (n *Netns) DialUDP(t testing.TB, to netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
