//go:build !linux

package main

import (
	"errors"
	"fmt"
	"net/netip"
)

func isLocalAddr(netip.Addr) (bool, error) {
	return false, fmt.Errorf("flowtun runs on Linux only: %w", errors.ErrUnsupported)
}
