//go:build !linux

package conn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// newAnyIPReceiver needs Linux: IPV6_RECVPKTINFO with an AnyIP local route.
func newAnyIPReceiver(socks []*net.UDPConn, disableGRO, steer bool) (receiver, error) {
	return nil, fmt.Errorf("conn: the AnyIP receiver needs Linux: %w", errors.ErrUnsupported)
}

// newRawReceiver needs Linux: AF_PACKET sockets.
func newRawReceiver(ifname string, prefix netip.Prefix, port uint16) (receiver, error) {
	return nil, fmt.Errorf("conn: the raw receiver needs Linux (AF_PACKET): %w", errors.ErrUnsupported)
}
