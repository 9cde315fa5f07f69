package host

import (
	"net"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

var testPrefix = netip.MustParsePrefix("2001:db8:b::/64")

// anyIPNetns makes a namespace with an AnyIP local route for testPrefix.
func anyIPNetns(t testing.TB) *testutil.Netns {
	t.Helper()
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "-6", "route", "add", "local", testPrefix.String(), "dev", "lo")
	return ns
}

// listenUDP opens a UDP socket inside ns on laddr; the zero laddr means a
// dual-stack socket on [::] with an ephemeral port. It is closed when the
// test ends.
func listenUDP(t testing.TB, ns *testutil.Netns, laddr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var uc *net.UDPConn
	err := ns.Do(func() (err error) {
		var a *net.UDPAddr
		if laddr.IsValid() {
			a = net.UDPAddrFromAddrPort(laddr)
		}
		uc, err = net.ListenUDP("udp", a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

func localAddrPort(uc *net.UDPConn) netip.AddrPort {
	return uc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// rawConfig is a config of the raw receive mode on iface.
func rawConfig(iface string) conn.Config {
	return conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820, Receive: conn.Raw{Interface: iface}}
}
