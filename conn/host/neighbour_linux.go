package host

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
)

// AddNeighbourProxies makes the kernel answer neighbour discovery on link
// for exactly the addresses of m's range, one proxy entry per address, as
//
//	sysctl -w net.ipv6.conf.LINK.proxy_ndp=1
//	sysctl -w net.ipv6.conf.LINK.forwarding=1
//	ip -6 neigh add proxy ADDRESS dev LINK    # for each address
//
// do. It is for a host whose prefix is on-link (the usual home LAN): the
// upstream router looks up each destination address with a neighbour
// solicitation, and without an answer it drops the datagrams. Datagrams
// that arrive still need a local route for the range (see
// [AddLocalRoute]).
//
// The kernel answers for a proxy entry only where forwarding is on as
// well as proxy_ndp (ndisc_recv_ns in net/ipv6/ndisc.c), so it turns both
// on for link. Forwarding on makes the link ignore router advertisements
// unless accept_ra is 2 (Documentation/networking/ip-sysctl.rst), so an
// accept_ra of 1 becomes 2: the host keeps its SLAAC address and default
// route. [NeighbourProxies.Sysctls] lists what changed.
//
// It refuses a range of more than [MaxNeighbourProxies] addresses
// (wrapping [ErrRangeTooLarge]): each address in use takes an entry in
// the upstream router's neighbour table. Entries already there are kept
// and left alone by Remove, so calling it twice adds nothing the second
// time. On an error it undoes what it did.
//
// It needs CAP_NET_ADMIN and acts in the network namespace of the calling
// thread; Remove acts there too, from any thread.
func AddNeighbourProxies(link string, m *flowaddr.Mapper) (*NeighbourProxies, error) {
	addrs, err := rangeAddrs(m)
	if err != nil {
		return nil, err
	}
	// A handle of our own pins the namespace for Remove.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("host: neighbour proxies on %s: open netlink: %w", link, err)
	}
	index, err := ndpLink(h, link)
	if err != nil {
		h.Close()
		return nil, err
	}
	present, err := proxiedAddrs(h, index)
	if err != nil {
		h.Close()
		return nil, neighbourError(link, "list the proxy entries", err)
	}
	p := &NeighbourProxies{link: link}
	removeEntries := func() error {
		var errs []error
		for _, a := range p.added {
			if err := h.NeighDel(proxyEntry(index, a)); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, neighbourError(link, "remove the proxy entry for "+a.String(), err))
			}
		}
		return errors.Join(errs...)
	}
	for _, a := range addrs {
		if present[a] {
			p.present++
			continue
		}
		if err := h.NeighAdd(proxyEntry(index, a)); err != nil {
			err = errors.Join(neighbourError(link, "add a proxy entry for "+a.String(), err), removeEntries())
			h.Close()
			return nil, err
		}
		p.added = append(p.added, a)
	}
	changed, restore, err := setProxySysctls(link)
	if err != nil {
		err = errors.Join(err, removeEntries())
		h.Close()
		return nil, err
	}
	p.sysctls = changed
	p.undo = func() error {
		defer h.Close()
		// The sysctls first: the link stops answering at once, even for
		// an entry whose removal fails.
		return errors.Join(restore(), removeEntries())
	}
	return p, nil
}

// proxyEntry is the proxy neighbour entry `ip -6 neigh add proxy a dev
// LINK` makes.
func proxyEntry(linkIndex int, a netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: linkIndex,
		Family:    netlink.FAMILY_V6,
		Flags:     netlink.NTF_PROXY,
		IP:        a.AsSlice(),
	}
}

// ndpLink returns the index of the named link, which must do neighbour
// discovery.
func ndpLink(h *netlink.Handle, name string) (int, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
			return 0, fmt.Errorf("host: neighbour proxies: no interface %q (ip link show lists them): %w", name, err)
		}
		return 0, fmt.Errorf("host: neighbour proxies: interface %q: %w", name, err)
	}
	a := l.Attrs()
	if a.Flags&net.FlagLoopback != 0 || a.RawFlags&unix.IFF_NOARP != 0 {
		return 0, fmt.Errorf("host: neighbour proxies: interface %s does no neighbour discovery (loopback, or a point-to-point or tunnel link): "+
			"name the Ethernet or Wi-Fi interface the on-link prefix is on", name)
	}
	return a.Index, nil
}

// proxiedAddrs returns the IPv6 addresses with a proxy entry on the link.
// (An entry added with the router flag is not listed, and counts as
// missing: the netlink library keeps only entries whose flags are exactly
// NTF_PROXY.)
func proxiedAddrs(h *netlink.Handle, linkIndex int) (map[netip.Addr]bool, error) {
	neighs, err := h.NeighProxyList(linkIndex, netlink.FAMILY_V6)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		// The table changed under the dump: read it again.
		neighs, err = h.NeighProxyList(linkIndex, netlink.FAMILY_V6)
	}
	if err != nil {
		return nil, err
	}
	got := make(map[netip.Addr]bool, len(neighs))
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok {
			got[a.Unmap()] = true
		}
	}
	return got, nil
}

// neighbourError says what a failed neighbour-table operation needs.
func neighbourError(link, op string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("host: neighbour proxies on %s: %s needs CAP_NET_ADMIN: run as root or grant it with setcap cap_net_admin+ep: %w", link, op, err)
	case errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("host: neighbour proxies on %s: %s: IPv6 is disabled on this host (check sysctl net.ipv6.conf.all.disable_ipv6): %w", link, op, err)
	}
	return fmt.Errorf("host: neighbour proxies on %s: %s: %w", link, op, err)
}

// sysctlSetting is a value a sysctl must have, set only when its value
// is onlyFrom, if that is given.
type sysctlSetting struct {
	name, value, onlyFrom string
}

// proxySysctls are the settings of link that proxy NDP needs, in the
// order they are set: accept_ra before forwarding, so that no router
// advertisement is ignored in between.
func proxySysctls(link string) []sysctlSetting {
	conf := "net/ipv6/conf/" + link + "/"
	return []sysctlSetting{
		{name: conf + "proxy_ndp", value: "1"},
		{name: conf + "accept_ra", value: "2", onlyFrom: "1"}, // 0 stays off
		{name: conf + "forwarding", value: "1"},
	}
}

// setProxySysctls sets link's proxy_ndp and forwarding to 1, and its
// accept_ra from 1 to 2. It returns what it changed and the function that
// puts the old values back. The files stay open until then: an open
// /proc/sys/net file belongs to the network namespace it was opened in,
// so restore writes there from any thread.
func setProxySysctls(link string) (changed []SysctlChange, restore func() error, err error) {
	var files []*os.File
	restore = func() error {
		var errs []error
		for i := len(changed) - 1; i >= 0; i-- {
			if err := writeSysctlFile(files[i], changed[i].Old); err != nil {
				errs = append(errs, sysctlError(changed[i].Name, "put back "+changed[i].Old, err))
			}
		}
		for _, f := range files {
			f.Close()
		}
		return errors.Join(errs...)
	}
	for _, want := range proxySysctls(link) {
		f, err := os.OpenFile("/proc/sys/"+want.name, os.O_RDWR, 0)
		if err != nil {
			return nil, nil, errors.Join(sysctlError(want.name, "open", err), restore())
		}
		b, err := io.ReadAll(f)
		old := strings.TrimSpace(string(b))
		if err == nil && (old == want.value || want.onlyFrom != "" && old != want.onlyFrom) {
			f.Close()
			continue
		}
		if err == nil {
			err = writeSysctlFile(f, want.value)
		}
		if err != nil {
			f.Close()
			return nil, nil, errors.Join(sysctlError(want.name, "set "+want.value, err), restore())
		}
		files = append(files, f)
		changed = append(changed, SysctlChange{Name: want.name, Old: old, New: want.value})
	}
	return changed, restore, nil
}

func writeSysctlFile(f *os.File, v string) error {
	_, err := f.WriteAt([]byte(v+"\n"), 0)
	return err
}

func sysctlError(name, op string, err error) error {
	key := strings.ReplaceAll(name, "/", ".")
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("host: sysctl %s: %s needs CAP_NET_ADMIN: run as root or grant it with setcap cap_net_admin+ep: %w", key, op, err)
	}
	return fmt.Errorf("host: sysctl %s: %s: %w", key, op, err)
}

// proxyState reports how many of addrs have a proxy entry on the link, the
// first that has none, and whether the link's proxy_ndp and forwarding
// are both on, for Diagnose.
func proxyState(linkIndex int, link string, addrs []netip.Addr) (present int, missing netip.Addr, sysctlsOK bool, err error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return 0, missing, false, err
	}
	defer h.Close()
	proxied, err := proxiedAddrs(h, linkIndex)
	if err != nil {
		return 0, missing, false, err
	}
	for _, a := range addrs {
		if proxied[a] {
			present++
		} else if !missing.IsValid() {
			missing = a
		}
	}
	conf := "net/ipv6/conf/" + link + "/"
	ndp, _ := readSysctl(conf + "proxy_ndp")
	all, _ := readSysctl("net/ipv6/conf/all/proxy_ndp")
	fwd, _ := readSysctl(conf + "forwarding")
	return present, missing, (ndp == "1" || all == "1") && fwd == "1", nil
}
