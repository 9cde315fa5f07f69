package testutil

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestNetnsIsolatedAndConnected(t *testing.T) {
	a, b := NewNetns(t), NewNetns(t)
	Veth(t, a, "va", b, "vb")
	a.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	b.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")

	if out := a.Run(t, "ip", "-6", "addr", "show", "dev", "va"); !strings.Contains(out, "2001:db8:1::1") {
		t.Fatalf("address missing in namespace a:\n%s", out)
	}
	if _, err := b.Output("ip", "link", "show", "va"); err == nil {
		t.Fatal("namespace b sees a's interface va")
	}

	srv := b.ListenUDP(t, netip.MustParseAddrPort("[2001:db8:1::2]:9000"))
	cli := a.DialUDP(t, netip.MustParseAddrPort("[2001:db8:1::2]:9000"))
	if _, err := cli.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, from, err := srv.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello" || from.Addr() != netip.MustParseAddr("2001:db8:1::1") {
		t.Fatalf("got %q from %v, want \"hello\" from 2001:db8:1::1", buf[:n], from)
	}
}
