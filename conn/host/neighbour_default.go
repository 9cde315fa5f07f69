//go:build !linux

package host

import (
	"errors"
	"fmt"

	"github.com/flowspread/flowspread/flowaddr"
)

// AddNeighbourProxies needs Linux's proxy NDP; elsewhere it returns an
// error wrapping [errors.ErrUnsupported] (or, first, the range's error).
func AddNeighbourProxies(link string, m *flowaddr.Mapper) (*NeighbourProxies, error) {
	if _, err := rangeAddrs(m); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("host: neighbour proxies on %s need Linux: %w", link, errors.ErrUnsupported)
}
