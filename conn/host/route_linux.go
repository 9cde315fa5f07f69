package host

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddLocalRoute makes every address of prefix local to this host, the way
//
//	ip -6 route add local PREFIX dev lo
//
// does: a route of type local in table local. Then one UDP socket bound to
// [::]:port receives datagrams sent to any address of the prefix (the
// AnyIP receive mode of [Listen]), and, with IPV6_FREEBIND, sends from any
// of them.
//
// It is idempotent: if the route is there already it adds nothing, and the
// remove function it returns does nothing either, leaving the route to
// whoever added it. Otherwise remove deletes the route it added; call it
// once. The route lives in the network namespace of the calling thread,
// and remove acts on that namespace from whatever thread calls it.
//
// It needs CAP_NET_ADMIN.
func AddLocalRoute(prefix netip.Prefix) (remove func() error, err error) {
	route, err := localRoute(prefix)
	if err != nil {
		return nil, err
	}
	// A handle of our own pins the namespace for remove.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("host: add local route for %v: open netlink: %w", prefix, err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("host: add local route for %v: no loopback interface: %w", prefix, err)
	}
	route.LinkIndex = lo.Attrs().Index
	nothing := func() error { return nil }
	if exists, err := hasLocalRoute(h, route); err != nil {
		h.Close()
		return nil, routeError("add local route for", prefix, err)
	} else if exists {
		h.Close()
		return nothing, nil
	}
	if err := h.RouteAdd(route); err != nil {
		h.Close()
		if errors.Is(err, unix.EEXIST) {
			return nothing, nil // added meanwhile by someone else
		}
		return nil, routeError("add local route for", prefix, err)
	}
	return func() error {
		defer h.Close()
		if err := h.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
			return routeError("remove local route for", prefix, err)
		}
		return nil
	}, nil
}

// RemoveLocalRoute deletes the local route for prefix that [AddLocalRoute]
// or `ip -6 route add local PREFIX dev lo` added, in the network namespace
// of the calling thread. A missing route is no error. It needs
// CAP_NET_ADMIN.
func RemoveLocalRoute(prefix netip.Prefix) error {
	route, err := localRoute(prefix)
	if err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("host: remove local route for %v: no loopback interface: %w", prefix, err)
	}
	route.LinkIndex = lo.Attrs().Index
	route.Protocol = 0 // match the route whoever added it
	if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
		return routeError("remove local route for", prefix, err)
	}
	return nil
}

// localRoute is the route `ip -6 route add local PREFIX dev lo` makes,
// without its interface.
func localRoute(prefix netip.Prefix) (*netlink.Route, error) {
	if !prefix.IsValid() || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("host: local route: prefix %v is not an IPv6 prefix", prefix)
	}
	prefix = prefix.Masked()
	return &netlink.Route{
		Dst:      &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 128)},
		Table:    unix.RT_TABLE_LOCAL,
		Type:     unix.RTN_LOCAL,
		Scope:    netlink.SCOPE_HOST,
		Protocol: unix.RTPROT_STATIC,
		Family:   netlink.FAMILY_V6,
	}, nil
}

// hasLocalRoute reports whether table local has a local route for exactly
// route's destination.
func hasLocalRoute(h *netlink.Handle, route *netlink.Route) (bool, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V6,
		&netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: route.Dst, Type: unix.RTN_LOCAL},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST|netlink.RT_FILTER_TYPE)
	if err != nil {
		return false, err
	}
	return len(routes) > 0, nil
}

// routeError says what a failed route change needs.
func routeError(op string, prefix netip.Prefix, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("host: %s %v needs CAP_NET_ADMIN: run as root or grant it with setcap cap_net_admin+ep: %w", op, prefix, err)
	case errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("host: %s %v: IPv6 is disabled on this host (check sysctl net.ipv6.conf.all.disable_ipv6): %w", op, prefix, err)
	}
	return fmt.Errorf("host: %s %v: %w", op, prefix, err)
}
