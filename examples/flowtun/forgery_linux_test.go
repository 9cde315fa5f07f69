package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/internal/testutil"
)

// captured is one outer datagram as it arrived at B.
type captured struct {
	src, dst netip.AddrPort
	payload  []byte // the UDP payload: our header, ciphertext, tag
}

// captureTunnelDatagram opens a raw UDP socket in ns, which gets a copy of
// every UDP datagram the host receives, and returns a function that waits
// for the next datagram between the tunnel ports with a small payload.
// The copy is independent of the code under test.
func captureTunnelDatagram(t *testing.T, ns *testutil.Netns) func() captured {
	t.Helper()
	var fd int
	err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatalf("capture socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return func() captured {
		t.Helper()
		buf := make([]byte, 65536)
		oob := make([]byte, 128)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
			if err != nil {
				continue // the receive timeout: look at the clock again
			}
			// A raw IPv6 socket gets the datagram from its UDP header on.
			if n < 8 || int(binary.BigEndian.Uint16(buf[4:6])) != n || n > 200 {
				continue
			}
			sport, dport := binary.BigEndian.Uint16(buf[0:2]), binary.BigEndian.Uint16(buf[2:4])
			if sport != tunPort || dport != tunPort || buf[8] != typeData {
				continue
			}
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				t.Fatalf("capture control messages: %v", err)
			}
			var dst netip.Addr
			for _, cm := range cms {
				if cm.Header.Level == unix.IPPROTO_IPV6 && cm.Header.Type == unix.IPV6_PKTINFO {
					dst = netip.AddrFrom16([16]byte(cm.Data[:16]))
				}
			}
			sa, ok := from.(*unix.SockaddrInet6)
			if !ok || !dst.IsValid() {
				t.Fatalf("captured datagram without addresses: %v, %v", from, dst)
			}
			return captured{
				src:     netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), sport),
				dst:     netip.AddrPortFrom(dst, dport),
				payload: bytes.Clone(buf[8:n]),
			}
		}
		t.Fatal("captured no tunnel datagram in 30 s")
		return captured{}
	}
}

// injector sends datagrams from ns with any source address and port: a
// raw socket with IPV6_FREEBIND, the kernel filling in the UDP checksum
// (IPV6_CHECKSUM, RFC 3542 section 3.1), as an attacker on the path would.
type injector struct{ fd int }

func newInjector(t *testing.T, ns *testutil.Netns) *injector {
	t.Helper()
	var fd int
	err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 6); err != nil {
			return fmt.Errorf("IPV6_CHECKSUM: %w", err)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	})
	if err != nil {
		t.Fatalf("injector socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &injector{fd: fd}
}

func (in *injector) send(t *testing.T, src, dst netip.AddrPort, payload []byte) {
	t.Helper()
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:2], src.Port())
	binary.BigEndian.PutUint16(udp[2:4], dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[8:], payload)
	// One datagram, one source: IPV6_PKTINFO names it per message.
	pi := unix.Inet6Pktinfo{Addr: src.Addr().As16()}
	oob := unix.PktInfo6(&pi)
	if err := unix.Sendmsg(in.fd, udp, oob, &unix.SockaddrInet6{Addr: dst.Addr().As16()}, 0); err != nil {
		t.Fatalf("inject %v -> %v: %v", src, dst, err)
	}
}

// TestTunnelDropsForgeries re-injects a captured datagram, as is and
// altered, and checks that B drops each and counts it under its reason.
func TestTunnelDropsForgeries(t *testing.T) {
	h := newTwoHosts(t)
	cfgA, cfgB := endConfigs(spreadBoth, false)
	// A's clock stands still, so its counter never jumps (sealer.catchUp)
	// and the captured datagram leaves the window only by the fillers.
	startA := uint64(time.Now().UnixNano())
	a := startEndAt(t, h.a, cfgA, startA, func(a *tunnel) { a.clock = func() uint64 { return startA } })
	b := startEnd(t, h.b, cfgB)

	// A sink for inner UDP datagrams in B, and a sender in A.
	sinkAddr := netip.AddrPortFrom(innerB6.Addr(), 7002)
	var sink, sender *net.UDPConn
	if err := h.b.Do(func() (err error) { sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(sinkAddr)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	if err := h.a.Do(func() (err error) { sender, err = net.ListenUDP("udp", nil); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	probe := func(msg string) {
		t.Helper()
		if _, err := sender.WriteToUDPAddrPort([]byte(msg), sinkAddr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		sink.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net, not a measure
		for {
			n, _, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("probe %q did not come through: %v", msg, err)
			}
			if string(buf[:n]) == msg {
				return
			}
		}
	}

	capture := captureTunnelDatagram(t, h.b)
	probe("first")
	orig := capture()
	if !prefixA.Contains(orig.src.Addr()) || !prefixB.Contains(orig.dst.Addr()) {
		t.Fatalf("captured %v -> %v: not between the spread prefixes", orig.src, orig.dst)
	}
	attacker := newInjector(t, h.a)

	inject := func(name string, payload []byte, counter func(Stats) uint64) {
		t.Helper()
		// A probe's twin (a replay B drops) may still be on its way.
		testutil.WaitFor(t, "B to have read all that A sent", func() bool {
			sa := a.stats().Conn
			return b.stats().Received >= sa.Sent+sa.SentProbes
		})
		before := b.stats()
		attacker.send(t, orig.src, orig.dst, payload)
		testutil.WaitFor(t, name+" to be counted", func() bool { return counter(b.stats()) > counter(before) })
		after := b.stats()
		if got := counter(after) - counter(before); got != 1 {
			t.Errorf("%s: counted %d times, want once", name, got)
		}
		if d := dropSum(after) - dropSum(before); d != 1 {
			t.Errorf("%s: %d drops in all, want 1: %+v", name, d, after)
		}
	}
	flipped := func(i int) []byte {
		p := bytes.Clone(orig.payload)
		p[i] ^= 0x01
		return p
	}
	replayed := func(s Stats) uint64 { return s.DroppedReplay }
	auth := func(s Stats) uint64 { return s.DroppedAuth }
	malformed := func(s Stats) uint64 { return s.DroppedMalformed }

	inject("replayed datagram", bytes.Clone(orig.payload), replayed)
	inject("replayed again", bytes.Clone(orig.payload), replayed)
	// A changed copy of a datagram B has seen is caught by its counter
	// before any decryption.
	inject("a replay with a ciphertext byte flipped", flipped(headerLen+3), replayed)
	// A counter far ahead passes the window check, fails authentication,
	// and must not move the window: fresh datagrams still get through.
	raised := bytes.Clone(orig.payload)
	raised[1] ^= 0x40
	inject("the counter raised", raised, auth)
	inject("the type byte changed", flipped(0), malformed)
	inject("cut to the header", bytes.Clone(orig.payload[:headerLen]), malformed)
	probe("after the forgeries")

	// Push the captured counter out of the replay window: B must receive
	// a window's worth of newer datagrams (some fillers may be lost on the
	// way, or overflow the sink, which does not matter), then replay it.
	target := b.stats().Received + replayWindowSize
	for i := 0; b.stats().Received < target; i++ {
		if i > 100*replayWindowSize {
			t.Fatalf("B received %d of %d fillers", b.stats().Received-(target-replayWindowSize), i)
		}
		if _, err := sender.WriteToUDPAddrPort(fmt.Appendf(nil, "filler %d", i), sinkAddr); err != nil {
			t.Fatal(err)
		}
		if i%64 == 63 {
			time.Sleep(time.Millisecond) // let B keep up; only pacing, nothing is timed
		}
	}
	inject("replayed after a window's worth", bytes.Clone(orig.payload), func(s Stats) uint64 { return s.DroppedTooOld })

	// Tampering with a datagram B has not seen: seal a fresh one with A's
	// key, as A would with a later counter, and alter a copy of it.
	sendA, _, err := directionKeys(testPSK, a.self, cfgA.peer)
	if err != nil {
		t.Fatal(err)
	}
	origCounter, err := parseHeader(orig.payload)
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := newSealer(sendA, origCounter+1<<40) // far beyond what A sends in this test
	if err != nil {
		t.Fatal(err)
	}
	// Its own sink: the first is full of fillers.
	freshAddr := netip.AddrPortFrom(innerB6.Addr(), 7003)
	var freshSink *net.UDPConn
	if err := h.b.Do(func() (err error) {
		freshSink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(freshAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { freshSink.Close() })
	inner := testutil.Build(testutil.IPv6(innerA6.Addr(), innerB6.Addr()), testutil.UDP(40000, freshAddr.Port()),
		gopacket.Payload("sealed by the test"))
	fresh := sealPacket(t, ahead, inner)
	freshFlipped := func(i int) []byte {
		p := bytes.Clone(fresh)
		p[i] ^= 0x80
		return p
	}
	inject("a fresh datagram with a ciphertext byte flipped", freshFlipped(headerLen+len(inner)/2), auth)
	inject("a fresh datagram with a tag byte flipped", freshFlipped(len(fresh)-1), auth)
	inject("a fresh datagram with its counter changed", freshFlipped(8), auth)
	// Unaltered, it is authentic: only the flips made the copies fail.
	// (Its counter moves B's window far ahead, so this comes last.)
	attacker.send(t, orig.src, orig.dst, fresh)
	buf := make([]byte, 100)
	freshSink.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		n, _, err := freshSink.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("the unaltered fresh datagram did not come through: %v", err)
		}
		if string(buf[:n]) == "sealed by the test" {
			break
		}
	}
}

// dropSum adds up every reason a datagram was dropped at B.
func dropSum(s Stats) uint64 {
	return s.DroppedMalformed + s.DroppedAuth + s.DroppedReplay + s.DroppedTooOld + s.DroppedBadInner +
		s.Conn.DroppedForeign + s.Conn.DroppedOutsideRange + s.Conn.RecvTruncated
}

// TestTunnelRejectsReplayFromBeforeStart is an end that has just
// (re)started, and an attacker who recorded the peer's datagrams before:
// a datagram the peer sealed more than maxClockSkew before the start is
// dropped as too old, one sealed within it is taken.
func TestTunnelRejectsReplayFromBeforeStart(t *testing.T) {
	h := newTwoHosts(t)
	_, cfgB := endConfigs(spreadOff, false)
	start := uint64(time.Now().UnixNano())
	b := startEndAt(t, h.b, cfgB, start, nil)

	sinkAddr := netip.AddrPortFrom(innerB6.Addr(), 7004)
	var sink *net.UDPConn
	if err := h.b.Do(func() (err error) { sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(sinkAddr)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })

	// A's datagrams as A would seal them, at the counter given.
	selfA := netip.AddrPortFrom(linkA, tunPort)
	sendA, _, err := directionKeys(testPSK, selfA, b.self)
	if err != nil {
		t.Fatal(err)
	}
	sealedAt := func(counter uint64, msg string) []byte {
		s, err := newSealer(sendA, counter-1)
		if err != nil {
			t.Fatal(err)
		}
		inner := testutil.Build(testutil.IPv6(innerA6.Addr(), innerB6.Addr()), testutil.UDP(40000, sinkAddr.Port()), gopacket.Payload(msg))
		return sealPacket(t, s, inner)
	}
	floor := start - uint64(maxClockSkew)
	attacker := newInjector(t, h.a)
	attacker.send(t, selfA, b.self, sealedAt(floor-1, "sealed before the skew"))
	attacker.send(t, selfA, b.self, sealedAt(floor, "sealed within the skew"))

	buf := make([]byte, 100)
	sink.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net, not a measure
	for {
		n, _, err := sink.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("the datagram sealed within the skew did not come through: %v; B: %+v", err, b.stats())
		}
		if msg := string(buf[:n]); msg == "sealed before the skew" {
			t.Errorf("B took a datagram sealed %v before it started", maxClockSkew+time.Nanosecond)
		} else if msg == "sealed within the skew" {
			break
		}
	}
	// B counts a delivery after its write to the TUN device returns, which
	// can be after the sink has read the datagram.
	testutil.WaitFor(t, "B to count its delivery", func() bool { return b.stats().Delivered > 0 })
	if s := b.stats(); s.DroppedTooOld != 1 || s.Delivered != 1 {
		t.Errorf("B: %d dropped as too old, %d delivered; want 1 and 1", s.DroppedTooOld, s.Delivered)
	}
}
