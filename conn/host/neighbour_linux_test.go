package host

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// The on-link LAN of these tests: a router (::1) and a host (::2) share
// 2001:db8:5::/64 on one link; the host spreads over 2^4 addresses of it,
// 2001:db8:5::10 to ::1f, the default contiguous range.
var (
	lanPrefix    = netip.MustParsePrefix("2001:db8:5::/64")
	lanRange     = netip.MustParsePrefix("2001:db8:5::10/124")
	lanRouter    = netip.MustParseAddr("2001:db8:5::1")
	lanHostLink  = "eth0"
	lanRouterDev = "lan0"
)

const lanEchoPort = 7

type onLinkLAN struct {
	router, host *testutil.Netns
	mapper       *flowaddr.Mapper
}

func lanMapper(t testing.TB) *flowaddr.Mapper {
	t.Helper()
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: lanPrefix, Bits: 4})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// newOnLinkLAN builds the LAN: the host has an AnyIP local route for its
// range and a UDP echo on [::]:7 that answers from the address it was sent
// to; no neighbour proxies yet.
func newOnLinkLAN(t *testing.T) *onLinkLAN {
	t.Helper()
	lan := &onLinkLAN{router: testutil.NewNetns(t), host: testutil.NewNetns(t), mapper: lanMapper(t)}
	testutil.Veth(t, lan.router, lanRouterDev, lan.host, lanHostLink)
	lan.router.Run(t, "ip", "-6", "addr", "add", lanRouter.String()+"/64", "dev", lanRouterDev, "nodad")
	lan.host.Run(t, "ip", "-6", "addr", "add", "2001:db8:5::2/64", "dev", lanHostLink, "nodad")
	if first := netip.AddrFrom16(lan.mapper.Addr16(0)); first != lanRange.Addr() || lan.mapper.Len() != 16 {
		t.Fatalf("the range starts at %v with %d addresses, want %v with 16", first, lan.mapper.Len(), lanRange)
	}
	if err := lan.host.Do(func() error {
		remove, err := AddLocalRoute(lanRange)
		if err == nil {
			t.Cleanup(func() { remove() })
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lan.startEcho(t)
	return lan
}

func (lan *onLinkLAN) startEcho(t *testing.T) {
	uc := listenUDP(t, lan.host, netip.AddrPortFrom(netip.IPv6Unspecified(), lanEchoPort))
	// A source address that is local only by a route, not on an
	// interface, needs FREEBIND (ip6_datagram_send_ctl), as the conn sets.
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var optErr error
	if err := rc.Control(func(fd uintptr) { optErr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1) }); err != nil || optErr != nil {
		t.Fatalf("IPV6_FREEBIND: %v, %v", err, optErr)
	}
	pc := ipv6.NewPacketConn(uc)
	if err := pc.SetControlMessage(ipv6.FlagDst, true); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, cm, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed when the test ends
			}
			if cm != nil {
				pc.WriteTo(buf[:n], &ipv6.ControlMessage{Src: cm.Dst}, from)
			}
		}
	}()
}

// reach sends a datagram from the router to a's echo and waits up to
// timeout for the answer from a. It returns how long the answer took.
func (lan *onLinkLAN) reach(a netip.Addr, timeout time.Duration) (time.Duration, error) {
	var uc *net.UDPConn
	if err := lan.router.Do(func() (err error) { uc, err = net.ListenUDP("udp6", nil); return err }); err != nil {
		return 0, err
	}
	defer uc.Close()
	start := time.Now()
	msg := "to " + a.String()
	if _, err := uc.WriteToUDPAddrPort([]byte(msg), netip.AddrPortFrom(a, lanEchoPort)); err != nil {
		return 0, err
	}
	uc.SetReadDeadline(start.Add(timeout))
	buf := make([]byte, 64)
	for {
		n, from, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, err
		}
		if from.Addr() == a && string(buf[:n]) == msg {
			return time.Since(start), nil
		}
	}
}

// reachAll reaches each of addrs at once; it returns the slowest answer.
func (lan *onLinkLAN) reachAll(t *testing.T, addrs []netip.Addr) time.Duration {
	t.Helper()
	var (
		mu      sync.Mutex
		slowest time.Duration
		wg      sync.WaitGroup
	)
	for _, a := range addrs {
		wg.Go(func() {
			took, err := lan.reach(a, 5*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("the router cannot reach %v through the neighbour proxy: %v", a, err)
			}
			slowest = max(slowest, took)
		})
	}
	wg.Wait()
	return slowest
}

// routerNeighbours returns the router's neighbour entries for addresses
// of the range, by state.
func (lan *onLinkLAN) routerNeighbours(t *testing.T) map[netip.Addr]netlink.Neigh {
	t.Helper()
	got := map[netip.Addr]netlink.Neigh{}
	if err := lan.router.Do(func() error {
		l, err := netlink.LinkByName(lanRouterDev)
		if err != nil {
			return err
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, n := range neighs {
			if a, ok := netip.AddrFromSlice(n.IP); ok && lanRange.Contains(a) {
				got[a] = n
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// resolved reports whether a neighbour entry holds a link-layer address.
func resolved(n netlink.Neigh) bool {
	return n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0
}

// wantUnreachable checks that the router cannot reach a: no answer, and
// its neighbour entry for a unresolved (INCOMPLETE, then FAILED).
func (lan *onLinkLAN) wantUnreachable(t *testing.T, a netip.Addr) {
	t.Helper()
	if took, err := lan.reach(a, 3500*time.Millisecond); err == nil {
		t.Fatalf("the router reached %v in %v without a neighbour proxy for it", a, took)
	}
	n, ok := lan.routerNeighbours(t)[a]
	if !ok || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
		t.Fatalf("the router's neighbour entry for %v is %+v (found %v), want INCOMPLETE or FAILED", a, n, ok)
	}
}

func (lan *onLinkLAN) hostSysctl(t *testing.T, name string) string {
	t.Helper()
	return strings.TrimSpace(lan.host.Run(t, "cat", "/proc/sys/net/ipv6/conf/"+lanHostLink+"/"+name))
}

func (lan *onLinkLAN) hostProxies(t *testing.T) string {
	t.Helper()
	return lan.host.Run(t, "ip", "-6", "neigh", "show", "proxy", "dev", lanHostLink)
}

func (lan *onLinkLAN) addProxies(t *testing.T) *NeighbourProxies {
	t.Helper()
	var p *NeighbourProxies
	if err := lan.host.Do(func() (err error) { p, err = AddNeighbourProxies(lanHostLink, lan.mapper); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Remove() })
	return p
}

// TestNeighbourProxiesOnLink is the on-link LAN end to end: without
// proxies the router cannot resolve a range address; with them it reaches
// every address it tries, holding one neighbour entry per address used;
// after Remove, a new address goes unanswered again.
func TestNeighbourProxiesOnLink(t *testing.T) {
	lan := newOnLinkLAN(t)
	addr := func(b int) netip.Addr { return netip.AddrFrom16(lan.mapper.Addr16(uint32(b))) }
	if _, err := lan.reach(netip.MustParseAddr("2001:db8:5::2"), 3*time.Second); err != nil {
		t.Fatalf("the router cannot reach the host's own address, so the LAN is broken: %v", err)
	}

	t.Log("control: no proxies")
	lan.wantUnreachable(t, addr(15))

	p := lan.addProxies(t)
	if len(p.Added()) != 16 || p.Present() != 0 || p.Link() != lanHostLink {
		t.Fatalf("added %d entries (%d present) on %s, want 16 on %s", len(p.Added()), p.Present(), p.Link(), lanHostLink)
	}
	wantSysctls := []SysctlChange{
		{Name: "net/ipv6/conf/eth0/proxy_ndp", Old: "0", New: "1"},
		{Name: "net/ipv6/conf/eth0/accept_ra", Old: "1", New: "2"},
		{Name: "net/ipv6/conf/eth0/forwarding", Old: "0", New: "1"},
	}
	if got := p.Sysctls(); !slices.Equal(got, wantSysctls) {
		t.Fatalf("changed sysctls %v, want %v", got, wantSysctls)
	}

	used := []netip.Addr{addr(0), addr(1), addr(2), addr(5), addr(8), addr(11), addr(13), addr(14)}
	slowest := lan.reachAll(t, used)
	t.Logf("the router reached %d range addresses; the slowest first answer took %v (the kernel delays a proxy's answer to a multicast solicitation by up to proxy_delay, 0.8 s)", len(used), slowest)

	neighs := lan.routerNeighbours(t)
	var hostMAC net.HardwareAddr
	if err := lan.host.Do(func() error {
		l, err := netlink.LinkByName(lanHostLink)
		if err == nil {
			hostMAC = l.Attrs().HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var entries []string
	for a, n := range neighs {
		if !resolved(n) {
			continue
		}
		entries = append(entries, a.String())
		if !slices.Contains(used, a) {
			t.Errorf("the router has a neighbour entry for %v, which it never sent to", a)
		}
		if n.HardwareAddr.String() != hostMAC.String() {
			t.Errorf("the router's entry for %v has link-layer address %v, want the host's %v", a, n.HardwareAddr, hostMAC)
		}
	}
	if len(entries) != len(used) {
		t.Errorf("the router's neighbour table holds %d resolved entries for the range (%v), want one per address used, %d", len(entries), entries, len(used))
	}
	t.Logf("router neighbour entries for the range: %d resolved for %d addresses used", len(entries), len(used))

	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if out := lan.hostProxies(t); strings.TrimSpace(out) != "" {
		t.Fatalf("proxy entries left after Remove:\n%s", out)
	}
	for name, want := range map[string]string{"proxy_ndp": "0", "accept_ra": "1", "forwarding": "0"} {
		if got := lan.hostSysctl(t, name); got != want {
			t.Errorf("after Remove, %s is %s, want %s as before", name, got, want)
		}
	}
	lan.wantUnreachable(t, addr(9))
	if err := p.Remove(); err != nil {
		t.Errorf("a second Remove: %v", err)
	}
}

// TestNeighbourProxiesKeepWhatWasThere checks that AddNeighbourProxies
// adds only what is missing and Remove takes away only what it added.
func TestNeighbourProxiesKeepWhatWasThere(t *testing.T) {
	lan := &onLinkLAN{router: testutil.NewNetns(t), host: testutil.NewNetns(t), mapper: lanMapper(t)}
	testutil.Veth(t, lan.router, lanRouterDev, lan.host, lanHostLink)
	theirs := netip.MustParseAddr("2001:db8:5::13")
	lan.host.Run(t, "ip", "-6", "neigh", "add", "proxy", theirs.String(), "dev", lanHostLink)
	lan.host.Run(t, "sysctl", "-qw", "net.ipv6.conf."+lanHostLink+".proxy_ndp=1")

	first := lan.addProxies(t)
	if len(first.Added()) != 15 || first.Present() != 1 || slices.Contains(first.Added(), theirs) {
		t.Fatalf("first add: added %v (%d present), want the 15 addresses other than %v", first.Added(), first.Present(), theirs)
	}
	if got := first.Sysctls(); len(got) != 2 || got[0].Name != "net/ipv6/conf/eth0/accept_ra" || got[1].Name != "net/ipv6/conf/eth0/forwarding" {
		t.Fatalf("first add changed %v, want accept_ra and forwarding only (proxy_ndp was on)", got)
	}
	again := lan.addProxies(t)
	if len(again.Added()) != 0 || again.Present() != 16 || len(again.Sysctls()) != 0 {
		t.Fatalf("second add: added %d entries, %d present, changed %v; want nothing added, 16 present, nothing changed",
			len(again.Added()), again.Present(), again.Sysctls())
	}
	if err := again.Remove(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(lan.hostProxies(t), "proxy"); n != 16 {
		t.Fatalf("the second add's Remove changed the entries: %d left, want 16", n)
	}
	if err := first.Remove(); err != nil {
		t.Fatal(err)
	}
	if out := strings.TrimSpace(lan.hostProxies(t)); out != theirs.String()+" proxy" {
		t.Fatalf("after Remove the proxy entries are:\n%s\nwant only the one added before, %v", out, theirs)
	}
	if got := lan.hostSysctl(t, "proxy_ndp"); got != "1" {
		t.Errorf("Remove turned proxy_ndp to %s, though it was on before", got)
	}
}

// TestNeighbourProxiesWithoutCapability runs AddNeighbourProxies on a
// thread without CAP_NET_ADMIN, as an unprivileged program would.
func TestNeighbourProxiesWithoutCapability(t *testing.T) {
	lan := &onLinkLAN{router: testutil.NewNetns(t), host: testutil.NewNetns(t), mapper: lanMapper(t)}
	testutil.Veth(t, lan.router, lanRouterDev, lan.host, lanHostLink)
	err := lan.host.Do(func() error {
		// The thread is thrown away after Do: it never gets them back.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		p, err := AddNeighbourProxies(lanHostLink, lan.mapper)
		if err == nil {
			p.Remove()
			return errors.New("no error")
		}
		if !strings.Contains(err.Error(), "needs CAP_NET_ADMIN") || !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("error %q does not say CAP_NET_ADMIN is needed or does not wrap EPERM", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if out := strings.TrimSpace(lan.hostProxies(t)); out != "" {
		t.Errorf("a refused AddNeighbourProxies left entries:\n%s", out)
	}
	if got := lan.hostSysctl(t, "proxy_ndp"); got != "0" {
		t.Errorf("a refused AddNeighbourProxies left proxy_ndp at %s", got)
	}
}
