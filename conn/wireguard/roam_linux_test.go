package wireguard

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// flows sends n inner UDP flows from one end to the other through the
// tunnel and waits until all arrived.
func flows(t *testing.T, from, to *end, src, dst netip.Addr, n int, tag string) {
	t.Helper()
	for i := range n {
		from.send(innerUDP(src, dst, uint16(30000+i), 9000, flowaddr.NotECT, fmt.Sprintf("%s %d", tag, i)))
	}
	to.receive(t, n)
}

// TestTunnelRoams moves B, as a host that changes networks does: a new
// address, a new port, and no spread prefix there. A must follow B to
// its new endpoint (wireguard-go's roaming, through the Bind's
// AcceptUnknown) and reach it there, unspread; before the move and after
// B comes back, B's spread datagrams must show its canonical endpoint at
// A, never one of its range's addresses.
func TestTunnelRoams(t *testing.T) {
	a, b := newTunnel(t, nil)
	const n = 64
	checkEndpoint := func(when string, want netip.AddrPort) {
		t.Helper()
		if got := a.endpoint(t); got != want.String() {
			t.Errorf("%s: A's endpoint for B = %q, want %v", when, got, want)
		}
	}

	// At home: spread both ways, the endpoint stays canonical.
	flows(t, a, b, innerA, innerB, n, "A at home")
	flows(t, b, a, innerB, innerA, n, "B at home")
	checkEndpoint("B spreading from its range", linkB)
	if s := a.bind.Conn().Stats(); s.ReceivedUnknown != 0 {
		t.Errorf("at home: A received %d datagrams from strangers, want 0 (all from B's range)", s.ReceivedUnknown)
	}
	spreadHome := b.bind.Conn().Stats().SentPerAddress
	used := 0
	for _, c := range spreadHome {
		if c > 0 {
			used++
		}
	}
	if used < n/2 {
		t.Fatalf("B sent from %d addresses of its range for %d flows: the test needs it spreading", used, n)
	}

	// B moves: new address 2001:db8:ff::3 as the source of everything it
	// sends, new port, no prefix of its own there.
	away := netip.MustParseAddrPort("[2001:db8:ff::3]:51822")
	b.ns.Run(t, "ip", "addr", "add", "2001:db8:ff::3/64", "dev", "wb", "nodad")
	b.ns.Run(t, "ip", "-6", "route", "add", linkA.Addr().String()+"/128", "dev", "wb", "src", away.Addr().String())
	b.ns.Run(t, "ip", "-6", "route", "replace", prefixA.String(), "via", linkA.Addr().String(), "src", away.Addr().String())
	b.bind.mu.Lock()
	home := b.bind.cfg
	b.bind.cfg.Range.Prefix = netip.Prefix{}
	b.bind.mu.Unlock()
	if err := b.dev.IpcSet(fmt.Sprintf("listen_port=%d\n", away.Port())); err != nil {
		t.Fatalf("B's new port: %v", err)
	}

	before := a.bind.Conn().Stats()
	flows(t, b, a, innerB, innerA, n, "B away")
	checkEndpoint("after B moved", away)
	flows(t, a, b, innerA, innerB, n, "A to B away")
	checkEndpoint("after A answered B away", away)
	after := a.bind.Conn().Stats()
	if got := after.ReceivedUnknown - before.ReceivedUnknown; got < n {
		t.Errorf("A received %d datagrams from B's new address, want at least %d", got, n)
	}
	// A knows no prefix for B's new address: it sends plain. A counts a
	// batch after the kernel took it, which may be after B read it.
	testutil.WaitFor(t, fmt.Sprintf("A to count %d datagrams sent unspread to B's new address", n), func() bool {
		return a.bind.Conn().Stats().SentUnspread-before.SentUnspread >= n
	})
	if got := b.endpoint(t); got != linkA.String() {
		t.Errorf("B's endpoint for A = %q, want A's canonical %v", got, linkA)
	}

	// B comes home: its range, port and address again. Its spread
	// datagrams bring A back to the canonical endpoint, and A spreads.
	b.ns.Run(t, "ip", "-6", "route", "del", linkA.Addr().String()+"/128", "dev", "wb")
	b.ns.Run(t, "ip", "-6", "route", "replace", prefixA.String(), "via", linkA.Addr().String())
	b.ns.Run(t, "ip", "addr", "del", "2001:db8:ff::3/64", "dev", "wb")
	b.bind.mu.Lock()
	b.bind.cfg = home
	b.bind.mu.Unlock()
	if err := b.dev.IpcSet(fmt.Sprintf("listen_port=%d\n", linkB.Port())); err != nil {
		t.Fatalf("B's home port: %v", err)
	}
	flows(t, b, a, innerB, innerA, n, "B back")
	checkEndpoint("after B came home", linkB)
	before = a.bind.Conn().Stats()
	flows(t, a, b, innerA, innerB, n, "A to B back")
	checkEndpoint("after A answered B at home", linkB)
	after = a.bind.Conn().Stats()
	if got := after.SentUnspread - before.SentUnspread; got > n/8 {
		t.Errorf("A sent %d of %d datagrams unspread to B at home, want them spread", got, after.Sent-before.Sent)
	}
	if got := after.ReceivedUnknown - before.ReceivedUnknown; got != 0 {
		t.Errorf("A received %d datagrams from strangers with B at home, want 0", got)
	}
}
