//go:build !linux

package network

import (
	"errors"
	"fmt"
)

func attachClearHash(ifname string) error {
	return fmt.Errorf("clearing the flow hash on %s: %w (it needs Linux's tc BPF programs)", ifname, errors.ErrUnsupported)
}
