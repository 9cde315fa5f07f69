package conn_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

// faultHosts is a sender namespace s and a receiver namespace r joined by
// a veth that the tests take down, delete and re-create:
//
//	s (fs) 2001:db8:ff:1::2 ──── 2001:db8:ff:1::1 (fr) r
//	                              prefix 2001:db8:b::/64
//
// s routes r's prefix through the veth; r's canonical address is its
// link address.
type faultHosts struct {
	s, r *testutil.Netns
}

var (
	faultSender = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:ff:1::2"), portA)
	faultCanon  = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:ff:1::1"), portB)
	faultSpread = netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1234"), portB)
)

func newFaultHosts(t *testing.T, anyIP bool) *faultHosts {
	t.Helper()
	h := &faultHosts{s: testutil.NewNetns(t), r: testutil.NewNetns(t)}
	h.link(t)
	if anyIP {
		h.r.Run(t, "ip", "-6", "route", "add", "local", prefixB.String(), "dev", "lo")
	}
	return h
}

// link makes the veth, its addresses and the route to r's prefix: at the
// start, and again after the veth was deleted.
func (h *faultHosts) link(t *testing.T) {
	t.Helper()
	testutil.Veth(t, h.s, "fs", h.r, "fr")
	h.s.Run(t, "ip", "addr", "add", faultSender.Addr().String()+"/64", "dev", "fs", "nodad")
	h.r.Run(t, "ip", "addr", "add", faultCanon.Addr().String()+"/64", "dev", "fr", "nodad")
	h.s.Run(t, "ip", "-6", "route", "add", prefixB.String(), "via", faultCanon.Addr().String())
	h.neighbor(t)
}

// neighbor gives s a static neighbor entry for r's link address: a
// solicitation sent before r's kernel joins the new address's multicast
// group goes unanswered and is retried only a second later (RFC 4861's
// RetransTimer), which would time the setup, not the receive path.
func (h *faultHosts) neighbor(t *testing.T) {
	t.Helper()
	staticNeighbor(t, h.s, "fs", h.r, "fr", faultCanon.Addr())
}

// listen opens r's conn, with s's link address as its one peer.
func (h *faultHosts) listen(t *testing.T, recv conn.Receive, disableGRO bool) *conn.FlowSpreadConn {
	t.Helper()
	return listenIn(t, h.r, conn.Config{
		Range: conn.Range{Prefix: prefixB}, Port: portB, Receive: recv, DisableGRO: disableGRO,
		Peers: []conn.Peer{{Addr: faultSender, Range: conn.Range{Prefix: prefixA}, Open: true}},
	})
}

// read is one result of a background reader.
type read struct {
	payload string
	dst     netip.AddrPort
	err     error
}

// readForever reads c in a goroutine until it fails, reporting every
// datagram and the final error.
func readForever(t *testing.T, c *conn.FlowSpreadConn) <-chan read {
	t.Helper()
	out := make(chan read, 64)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) }) // runs before listenIn's Close
	go func() {
		buf := make([]byte, 2048)
		for {
			n, info, err := c.ReadMsg(buf)
			select {
			case out <- read{string(buf[:n]), info.OuterDst, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out
}

// expectFlow sends tagged datagrams from s to dst every 20 ms until the
// reader reports one, and fails t if none comes within a second or the
// reader fails. It returns how long that took.
func expectFlow(t *testing.T, c *conn.FlowSpreadConn, send *net.UDPConn, reads <-chan read, dst netip.AddrPort, tag string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for k := 0; ; k++ {
		if _, err := send.WriteToUDPAddrPort(fmt.Appendf(nil, "%s #%d", tag, k), dst); err != nil {
			t.Logf("%s: send: %v", tag, err) // the route may still be coming up
		}
		for wait := true; wait; {
			select {
			case r := <-reads:
				if r.err != nil {
					t.Fatalf("%s: the reader failed: %v", tag, r.err)
				}
				if strings.HasPrefix(r.payload, tag+" #") {
					return time.Since(start)
				}
			case <-tick.C:
				wait = false
			case <-deadline.C:
				s := c.Stats()
				t.Fatalf("%s: nothing arrived within a second (received %d, link down %d, rebound %d)",
					tag, s.Received, s.RecvLinkDown, s.RecvRebound)
			}
		}
	}
}

// expectAlive checks that the reader has not failed.
func expectAlive(t *testing.T, reads <-chan read, when string) {
	t.Helper()
	for {
		select {
		case r := <-reads:
			if r.err != nil {
				t.Fatalf("%s: the reader failed: %v", when, r.err)
			}
		default:
			return
		}
	}
}

// TestRawSurvivesLinkFlapAndRecreation runs a reader on a Raw conn while
// its interface goes down and up, then is deleted and re-created under
// the same name, then is deleted for good: datagrams, spread and to the
// canonical address (the host pump's), must arrive again within a second
// each time, the events must be counted, and Close must still end the
// read.
func TestRawSurvivesLinkFlapAndRecreation(t *testing.T) {
	h := newFaultHosts(t, false)
	c := h.listen(t, conn.Raw{Interface: "fr"}, false)
	send := freebindSocket(t, h.s, faultSender)
	reads := readForever(t, c)
	flowsAgain := func(when string) {
		t.Helper()
		spread := expectFlow(t, c, send, reads, faultSpread, when+", spread")
		canon := expectFlow(t, c, send, reads, faultCanon, when+", canonical")
		t.Logf("%s: spread datagrams after %v, canonical after %v", when, spread.Round(time.Millisecond), canon.Round(time.Millisecond))
	}
	flowsAgain("before")

	h.r.Run(t, "ip", "link", "set", "fr", "down")
	time.Sleep(200 * time.Millisecond) // the reader sees ENETDOWN meanwhile
	expectAlive(t, reads, "link down")
	h.r.Run(t, "ip", "link", "set", "fr", "up")
	// Link down flushed r's address (keep_addr_on_down is off by
	// default); put it back, as the network's manager would.
	h.r.Run(t, "ip", "addr", "replace", faultCanon.Addr().String()+"/64", "dev", "fr", "nodad")
	h.neighbor(t)
	flowsAgain("after down and up")
	flapped := c.Stats()
	if flapped.RecvLinkDown == 0 {
		t.Errorf("after a flap: RecvLinkDown = 0, want it counted")
	}

	h.r.Run(t, "ip", "link", "del", "fr")
	time.Sleep(200 * time.Millisecond)
	expectAlive(t, reads, "link deleted")
	h.link(t)
	flowsAgain("after re-creation")
	recreated := c.Stats()
	if recreated.RecvLinkDown <= flapped.RecvLinkDown {
		t.Errorf("after re-creation: RecvLinkDown = %d, want more than %d", recreated.RecvLinkDown, flapped.RecvLinkDown)
	}
	if recreated.RecvRebound == 0 {
		t.Errorf("after re-creation: RecvRebound = 0, want the rebind counted")
	}

	// Gone for good: the reader waits, and Close ends it.
	h.r.Run(t, "ip", "link", "del", "fr")
	time.Sleep(300 * time.Millisecond)
	expectAlive(t, reads, "link gone")
	c.Close()
	select {
	case r := <-reads:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("read after Close while the link is gone: %q, %v; want net.ErrClosed", r.payload, r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end a read waiting for a deleted interface")
	}
}

// TestTruncatedDatagramsDropped sends, through each backend and to both
// a spread and the canonical address, a datagram longer than the
// reader's buffer and then a short one: the long one must be dropped and
// counted in RecvTruncated, never delivered cut short, and the short one
// must arrive.
func TestTruncatedDatagramsDropped(t *testing.T) {
	for _, tt := range []struct {
		name       string
		anyIP      bool
		recv       conn.Receive
		disableGRO bool
	}{
		{"anyip", true, conn.AnyIP{}, false},
		{"anyip-nogro", true, conn.AnyIP{}, true},
		{"raw", false, conn.Raw{Interface: "fr"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newFaultHosts(t, tt.anyIP)
			c := h.listen(t, tt.recv, tt.disableGRO)
			send := freebindSocket(t, h.s, faultSender)
			for _, dst := range []struct {
				name string
				addr netip.AddrPort
			}{{"spread", faultSpread}, {"canonical", faultCanon}} {
				t.Run(dst.name, func(t *testing.T) {
					before := c.Stats().RecvTruncated
					long := strings.Repeat("L", 300)
					for _, p := range []string{long, "short"} {
						if _, err := send.WriteToUDPAddrPort([]byte(p), dst.addr); err != nil {
							t.Fatal(err)
						}
					}
					buf := make([]byte, 100)
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					n, info, err := c.ReadMsg(buf)
					if err != nil {
						t.Fatalf("ReadMsg: %v", err)
					}
					if got := string(buf[:n]); got != "short" {
						t.Fatalf("ReadMsg got %d bytes %.20q... to %v, want the short datagram: the long one was delivered cut short", n, got, info.OuterDst)
					}
					if got := c.Stats().RecvTruncated - before; got != 1 {
						t.Errorf("RecvTruncated grew by %d, want 1", got)
					}
				})
			}
		})
	}
}
