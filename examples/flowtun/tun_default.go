//go:build !linux

package main

import (
	"errors"
	"fmt"
	"net/netip"
)

// tunDevice is the TUN interface; only Linux has one here.
type tunDevice struct{ name string }

func openTUN(name string) (*tunDevice, error) {
	return nil, fmt.Errorf("TUN %q: flowtun runs on Linux only: %w", name, errors.ErrUnsupported)
}

func (d *tunDevice) configure(int, []netip.Prefix, []netip.Prefix) error {
	return errors.ErrUnsupported
}
func (d *tunDevice) readBatch([][]byte, []int) (int, error) { return 0, errors.ErrUnsupported }
func (d *tunDevice) write([]byte) (int, error)              { return 0, errors.ErrUnsupported }
func (d *tunDevice) Close() error                           { return nil }
