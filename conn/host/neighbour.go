package host

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/flowspread/flowspread/flowaddr"
)

// MaxNeighbourProxies bounds the range [AddNeighbourProxies] answers for:
// 2^12 addresses. Each address in use costs an entry in the upstream
// router's neighbour table, which is shared by every host on the link and
// small: Linux allows 1024 entries in all by default (gc_thresh3), and
// many home routers fewer. A larger range would evict the neighbours'
// entries rather than spread further.
const MaxNeighbourProxies = 1 << 12

// ErrRangeTooLarge is wrapped by the error [AddNeighbourProxies] returns
// for a range of more than [MaxNeighbourProxies] addresses.
var ErrRangeTooLarge = errors.New("host: range too large for neighbour proxies")

// SysctlChange is a sysctl that [AddNeighbourProxies] changed, and the
// value [NeighbourProxies.Remove] puts back.
type SysctlChange struct {
	// Name is the sysctl's path under /proc/sys, in slashes
	// ("net/ipv6/conf/eth0/proxy_ndp"), which keeps a dot in an interface
	// name whole.
	Name     string
	Old, New string
}

// NeighbourProxies are the proxy neighbour entries and sysctls that
// [AddNeighbourProxies] set up for a range. Remove undoes exactly that.
// Its methods are not safe for concurrent use.
type NeighbourProxies struct {
	link     string
	added    []netip.Addr
	present  int
	sysctls  []SysctlChange
	undo     func() error
	finished bool
}

// Link returns the interface the entries are on.
func (p *NeighbourProxies) Link() string { return p.link }

// Added returns the addresses whose proxy entries this call added, in
// bucket order; entries that were there before are not among them, and
// Remove leaves those.
func (p *NeighbourProxies) Added() []netip.Addr { return slices.Clone(p.added) }

// Present returns how many of the range's addresses had a proxy entry on
// the link already.
func (p *NeighbourProxies) Present() int { return p.present }

// Sysctls returns the sysctls this call changed, with their old values;
// empty when all were set already.
func (p *NeighbourProxies) Sysctls() []SysctlChange { return slices.Clone(p.sysctls) }

// Remove deletes the proxy entries this call added and puts back the
// sysctls it changed. An entry someone else deleted meanwhile is no
// error. Later calls do nothing. It acts in the network namespace
// AddNeighbourProxies ran in, from whatever thread calls it.
func (p *NeighbourProxies) Remove() error {
	if p.finished {
		return nil
	}
	p.finished = true
	return p.undo()
}

// rangeAddrs lists the addresses of m's range in bucket order, refusing a
// range over [MaxNeighbourProxies].
func rangeAddrs(m *flowaddr.Mapper) ([]netip.Addr, error) {
	if m == nil {
		return nil, errors.New("host: neighbour proxies: no range (the mapper is nil)")
	}
	if m.Len() > MaxNeighbourProxies {
		return nil, fmt.Errorf("%w: %d addresses of %v (2^%d) would each take an entry in the upstream router's neighbour table, "+
			"which all hosts on the link share (Linux's default holds 1024 in all, home routers often fewer): "+
			"use at most 2^12 addresses, 2^4 on a home LAN, and spread over ports for the rest",
			ErrRangeTooLarge, m.Len(), m.Prefix(), m.Bits())
	}
	addrs := make([]netip.Addr, m.Len())
	for b := range addrs {
		addrs[b] = netip.AddrFrom16(m.Addr16(uint32(b)))
	}
	return addrs, nil
}
