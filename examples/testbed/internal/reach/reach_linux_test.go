package reach

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestMain lets the test binary stand in for the testbed as `tcp-check`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "tcp-check" {
		os.Exit(TCPMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestTCPCheck runs the listener and the dialer across two namespaces,
// plain and with a short idle time, and a dial to a port nobody listens
// on, which must fail.
func TestTCPCheck(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	a, b := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, a, "va", b, "vb")
	a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	b.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")
	at := netip.MustParseAddrPort("[2001:db8:1::2]:5301")
	l, err := Listen(b.Namespace(), os.Args[0], at)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	if err := Dial(a.Namespace(), os.Args[0], at, 0); err != nil {
		t.Errorf("plain exchange: %v", err)
	}
	if err := Dial(a.Namespace(), os.Args[0], at, time.Second); err != nil {
		t.Errorf("exchange after 1 s idle: %v", err)
	}
	if err := Dial(a.Namespace(), os.Args[0], netip.AddrPortFrom(at.Addr(), 5399), 0); err == nil {
		t.Error("a dial to a closed port succeeded")
	}
	if n, err := Ping(a.Namespace(), at.Addr(), 4242, 2); err != nil || n != 2 {
		t.Errorf("ping: %d answered, %v", n, err)
	}
	c, err := Counters(a.Namespace(), "TcpRetransSegs", "TcpExtTCPSACKReorder")
	if err != nil || len(c) != 2 {
		t.Errorf("counters %v, %v", c, err)
	}
}
