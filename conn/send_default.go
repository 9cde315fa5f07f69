//go:build !linux

package conn

import (
	"errors"
	"net/netip"
)

type sender struct{}

func (s *sender) init(socketCaps)  {}
func (s *sender) gsoEnabled() bool { return false }

func (c *FlowSpreadConn) writeFlow(p []byte, peer netip.AddrPort, f Flow) error {
	return c.opError("write", nil, errors.ErrUnsupported)
}

func (c *FlowSpreadConn) writeBatch(msgs []Message) (int, error) {
	return 0, c.opError("write", nil, errors.ErrUnsupported)
}
