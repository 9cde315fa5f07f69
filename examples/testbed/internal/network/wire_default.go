//go:build !linux

package network

import (
	"errors"
	"fmt"
)

// wire needs Linux's AF_PACKET sockets.
type wire struct{}

func openWire(a, b string) (*wire, error) {
	return nil, fmt.Errorf("the wire forwarder: %w (it needs Linux AF_PACKET sockets)", errors.ErrUnsupported)
}

func (w *wire) run()             {}
func (w *wire) stats() WireStats { return WireStats{} }
