package main

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// isLocalAddr reports whether the kernel delivers packets to a on this
// host, in the network namespace of the calling thread: whether its route
// to a is of type local, as `ip route get` shows it. That covers the
// addresses of every interface and every address inside a local route.
func isLocalAddr(a netip.Addr) (bool, error) {
	routes, err := netlink.RouteGet(a.Unmap().AsSlice())
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return len(routes) > 0 && routes[0].Type == unix.RTN_LOCAL, nil
}
