//go:build !linux

package conn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

type socketCaps struct{ gso bool }

// openSocket reports that FlowSpreadConn needs Linux: sending from many
// source addresses of one socket relies on Linux socket options.
func openSocket(cfg *Config, port uint16) (*net.UDPConn, socketCaps, error) {
	return nil, socketCaps{}, fmt.Errorf("conn: FlowSpreadConn needs Linux (IPV6_FREEBIND and per-datagram IPV6_PKTINFO): %w", errors.ErrUnsupported)
}

func openPortSockets(cfg *Config) ([]*net.UDPConn, error) {
	_, _, err := openSocket(cfg, 0)
	return nil, err
}

func (c *FlowSpreadConn) openRing() {}

type msgRing struct{}

func (*msgRing) close() {}

type portRoute struct{}

func newPortRoute(*FlowSpreadConn) (*portRoute, error) { return nil, errors.ErrUnsupported }
func (*portRoute) setPeers([]Peer)                     {}
func (*portRoute) close()                              {}
func (*portRoute) connected() netip.AddrPort           { return netip.AddrPort{} }
