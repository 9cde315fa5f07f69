//go:build !linux

package conn

import (
	"errors"
	"fmt"
	"net"
)

type socketCaps struct{ gso bool }

// openSocket reports that FlowSpreadConn needs Linux: sending from many
// source addresses of one socket relies on Linux socket options.
func openSocket(cfg *Config, port uint16, shared bool) (*net.UDPConn, socketCaps, error) {
	return nil, socketCaps{}, fmt.Errorf("conn: FlowSpreadConn needs Linux (IPV6_FREEBIND and per-datagram IPV6_PKTINFO): %w", errors.ErrUnsupported)
}

func openPortSockets(cfg *Config) ([]*net.UDPConn, error) {
	_, _, err := openSocket(cfg, 0, false)
	return nil, err
}

func (c *FlowSpreadConn) openRing() {}

type msgRing struct{}

func (*msgRing) close() {}

func openECNSockets(cfg *Config, uc *net.UDPConn) []*net.UDPConn { return nil }

func unshare(uc *net.UDPConn) error { return nil }
