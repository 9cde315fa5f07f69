//go:build !linux

package host

import (
	"errors"
	"fmt"
	"net/netip"
)

// AddLocalRoute needs Linux; elsewhere it returns an error wrapping
// [errors.ErrUnsupported].
func AddLocalRoute(prefix netip.Prefix) (remove func() error, err error) {
	return nil, fmt.Errorf("host: local routes for %v need Linux: %w", prefix, errors.ErrUnsupported)
}

// RemoveLocalRoute needs Linux; elsewhere it returns an error wrapping
// [errors.ErrUnsupported].
func RemoveLocalRoute(prefix netip.Prefix) error {
	return fmt.Errorf("host: local routes for %v need Linux: %w", prefix, errors.ErrUnsupported)
}
