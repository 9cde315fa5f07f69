package conn

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestPortsReceive sends datagrams to every port of a conn's range and
// reads them, as the server's answers reach a client that spreads over
// ports, by each way the reader has: steered to the canonical socket by
// the BPF program, from each port's socket through the ring, and with a
// recvmmsg per socket. Each datagram must be read once, from the peer,
// with the port it was sent to.
func TestPortsReceive(t *testing.T) {
	for _, tt := range []struct {
		name          string
		steer, noRing bool
		ipv4          bool
	}{
		{"steered", true, false, false},
		{"steered-ipv4", true, false, true},
		{"io_uring", false, false, false},
		{"recvmmsg", false, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := anyIPNetns(t)
			src, dst := testSender, addrInPrefix(testPrefix, 7)
			if tt.ipv4 {
				src, dst = netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
			}
			snd := listenUDP(t, ns, "udp", netip.AddrPortFrom(src, 0))
			peer := localAddrPort(snd)
			ports := PortRange{First: 40000, Bits: 4}
			c := listenPorts(t, ns, Config{Range: Range{Ports: ports}, Peers: []Peer{{Addr: peer}}, DisablePortSteering: !tt.steer})
			r := c.recv.(*anyIPReceiver)
			switch {
			case tt.steer && !c.Stats().PortSteering:
				t.Skipf("no port steering here (needs Linux 5.9, CAP_BPF and CAP_NET_ADMIN): %v", r.steerErr)
			case !tt.steer && c.Stats().PortSteering:
				t.Fatal("Stats.PortSteering with DisablePortSteering")
			case tt.steer && r.set != nil:
				t.Fatal("steered, the reader still reads every port's socket")
			case tt.steer:
			case !tt.noRing && r.set.ring == nil:
				t.Skip("no io_uring here: the recvmmsg subtest reads the same way")
			case tt.noRing:
				r.set.ringMu.Lock()
				r.set.ring.close()
				r.set.ring = nil
				r.set.ringMu.Unlock()
			}

			const each = 3
			for k := range each {
				for i := range ports.Len() {
					to := netip.AddrPortFrom(dst, ports.Port(i))
					if _, err := snd.WriteToUDPAddrPort(fmt.Appendf(nil, "%d %d", i, k), to); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Where the datagrams wait tells whether the program steered
			// them: to the decoy in the socket map, and from it to the
			// canonical socket, which is not in the map.
			for i, pc := range c.portConns {
				if queued := pendingBytes(t, pc); tt.steer != (queued == 0) {
					t.Errorf("port %d's own socket holds %d bytes: steered %v", ports.Port(i), queued, tt.steer)
				}
			}
			if tt.steer {
				if r.steer.decoy < 0 {
					t.Error("the socket map holds the canonical socket itself: no decoy")
				} else if n, err := unix.IoctlGetInt(r.steer.decoy, unix.SIOCINQ); err != nil || n != 0 {
					t.Errorf("the decoy holds %d bytes (%v), want none", n, err)
				}
				if pendingBytes(t, c.uc) == 0 {
					t.Error("the canonical socket holds nothing: the steered datagrams went elsewhere")
				}
			}

			if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			msgs := makeMsgs(8, 2048) // fewer than the datagrams: several reads
			for len(seen) < each*ports.Len() {
				n, err := c.ReadBatch(msgs)
				if err != nil {
					t.Fatalf("after %d of %d datagrams: %v", len(seen), each*ports.Len(), err)
				}
				for _, m := range msgs[:n] {
					var i, k int
					if _, err := fmt.Sscanf(string(m.Buf[:m.N]), "%d %d", &i, &k); err != nil {
						t.Fatalf("payload %q: %v", m.Buf[:m.N], err)
					}
					if want := netip.AddrPortFrom(dst, ports.Port(i)); m.OuterDst != want || m.OuterSrc != peer || m.Peer != peer {
						t.Errorf("datagram %d %d read as %v -> %v from %v; want %v -> %v from %v", i, k, m.OuterSrc, m.OuterDst, m.Peer, peer, want, peer)
					}
					if seen[string(m.Buf[:m.N])] {
						t.Errorf("datagram %d %d read twice", i, k)
					}
					seen[string(m.Buf[:m.N])] = true
				}
			}
			if st := c.Stats(); st.DroppedForeign+st.DroppedOutsideRange != 0 {
				t.Errorf("Stats: %d foreign and %d outside the range dropped", st.DroppedForeign, st.DroppedOutsideRange)
			}
			if !tt.steer {
				return
			}
			// Close detaches the program: a port of the range is anyone's.
			c.Close()
			other := listenUDP(t, ns, "udp", netip.AddrPortFrom(netip.IPv6Unspecified(), ports.Port(3)))
			if _, err := snd.WriteToUDPAddrPort([]byte("after"), netip.AddrPortFrom(dst, ports.Port(3))); err != nil {
				t.Fatal(err)
			}
			other.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			if n, _, err := other.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "after" {
				t.Errorf("a socket on port %d after Close read %q, %v; want the datagram sent to it", ports.Port(3), buf[:n], err)
			}
		})
	}
}

// listenPorts opens a conn in ns and closes it when the test ends.
func listenPorts(t *testing.T, ns *testutil.Netns, cfg Config) *FlowSpreadConn {
	t.Helper()
	var c *FlowSpreadConn
	if err := ns.Do(func() (err error) {
		c, err = Listen(cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pendingBytes is the size of the next datagram queued on uc (SIOCINQ),
// 0 when none is.
func pendingBytes(t *testing.T, uc *net.UDPConn) int {
	t.Helper()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioErr error
	if err := rc.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ioErr != nil {
		t.Fatal(ioErr)
	}
	return n
}

// TestSteeringKeepsThePort checks the canonical port of a conn that
// steers its port range's datagrams, whose decoy shares the port with the
// canonical socket (portSteer): no other socket can bind the port, with
// or without SO_REUSEPORT, and every datagram sent to the port reaches
// the conn, none the decoy.
func TestSteeringKeepsThePort(t *testing.T) {
	ns := anyIPNetns(t)
	snd := listenUDP(t, ns, "udp", netip.AddrPortFrom(testSender, 0))
	peer := localAddrPort(snd)
	c := listenPorts(t, ns, Config{Range: Range{Ports: PortRange{First: 40000, Bits: 4}}, Peers: []Peer{{Addr: peer}}})
	r := c.recv.(*anyIPReceiver)
	if !c.Stats().PortSteering {
		t.Skipf("no port steering here (needs Linux 5.9, CAP_BPF and CAP_NET_ADMIN): %v", r.steerErr)
	}
	if r.steer.decoy < 0 {
		t.Fatal("the socket map holds the canonical socket itself: no decoy")
	}
	port := c.localAddr.Port
	ns.ExpectPortTaken(t, port)
	const n = 200
	to := netip.AddrPortFrom(addrInPrefix(testPrefix, 9), uint16(port))
	for i := range n {
		if _, err := snd.WriteToUDPAddrPort(fmt.Appendf(nil, "%d", i), to); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	msgs := makeMsgs(64, 2048)
	for got := 0; got < n; {
		k, err := c.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", got, n, err)
		}
		for _, m := range msgs[:k] {
			if m.OuterDst != to {
				t.Errorf("datagram %q read as sent to %v, want %v", m.Buf[:m.N], m.OuterDst, to)
			}
		}
		got += k
	}
	if q, err := unix.IoctlGetInt(r.steer.decoy, unix.SIOCINQ); err != nil || q != 0 {
		t.Errorf("the decoy holds %d bytes (%v), want none", q, err)
	}
}
