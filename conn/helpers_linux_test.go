package conn_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
	"golang.org/x/sys/unix"
)

// sockoptFlowinfo is IPV6_FLOWINFO from linux/in6.h: as a socket option
// it asks for each datagram's flow information in a control message of
// the same type.
const sockoptFlowinfo = 11

// loopbackNetns makes a namespace in which both prefixes are local (AnyIP
// routes on lo), so one host can send from A's range to B's and receive
// there.
func loopbackNetns(t testing.TB, prefixes ...netip.Prefix) *testutil.Netns {
	t.Helper()
	ns := testutil.NewNetns(t)
	for _, p := range prefixes {
		ns.Run(t, "ip", "-6", "route", "add", "local", p.String(), "dev", "lo")
	}
	return ns
}

// listenIn opens a FlowSpreadConn inside ns and closes it when the test
// ends.
func listenIn(t testing.TB, ns *testutil.Netns, cfg conn.Config) *conn.FlowSpreadConn {
	t.Helper()
	var c *conn.FlowSpreadConn
	if err := ns.Do(func() (err error) { c, err = conn.Listen(cfg); return err }); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sink is a plain UDP socket that reports, for each datagram, the outer
// addresses, traffic class and flow label the kernel saw: an observer
// independent of the code under test.
type sink struct {
	uc   *net.UDPConn
	port uint16
}

// arrival is one datagram as a sink saw it.
type arrival struct {
	payload  []byte
	src      netip.AddrPort
	dst      netip.Addr
	tclass   int
	flowinfo uint32 // host order: traffic class and flow label bits
}

func newSink(t testing.TB, ns *testutil.Netns) *sink {
	t.Helper()
	s := &sink{}
	err := ns.Do(func() error {
		uc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified})
		if err != nil {
			return err
		}
		rc, err := uc.SyscallConn()
		if err != nil {
			return err
		}
		var optErr error
		rc.Control(func(fd uintptr) {
			for _, opt := range []int{unix.IPV6_RECVPKTINFO, unix.IPV6_RECVTCLASS, sockoptFlowinfo} {
				if e := unix.SetsockoptInt(int(fd), unix.SOL_IPV6, opt, 1); e != nil {
					optErr = e
				}
			}
			// Room for a burst: the sink is read after the sends.
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
		s.uc, s.port = uc, uint16(uc.LocalAddr().(*net.UDPAddr).Port)
		return optErr
	})
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	t.Cleanup(func() { s.uc.Close() })
	return s
}

// read returns the next datagram, failing t if none arrives in time.
func (s *sink) read(t testing.TB) arrival {
	t.Helper()
	a, err := s.tryRead(5 * time.Second)
	if err != nil {
		t.Fatalf("sink read: %v", err)
	}
	return a
}

func (s *sink) tryRead(wait time.Duration) (arrival, error) {
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	s.uc.SetReadDeadline(time.Now().Add(wait))
	n, oobn, _, src, err := s.uc.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return arrival{}, err
	}
	a := arrival{payload: buf[:n], src: src, tclass: -1}
	cms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return arrival{}, err
	}
	for _, cm := range cms {
		if cm.Header.Level != unix.SOL_IPV6 {
			continue
		}
		switch cm.Header.Type {
		case unix.IPV6_PKTINFO:
			a.dst = netip.AddrFrom16([16]byte(cm.Data[:16]))
		case unix.IPV6_TCLASS:
			a.tclass = int(binary.NativeEndian.Uint32(cm.Data))
		case sockoptFlowinfo:
			a.flowinfo = binary.BigEndian.Uint32(cm.Data)
		}
	}
	return a, nil
}

// expectNone checks that no datagram is waiting.
func (s *sink) expectNone(t testing.TB) {
	t.Helper()
	if a, err := s.tryRead(100 * time.Millisecond); err == nil {
		t.Fatalf("unexpected datagram from %v to %v", a.src, a.dst)
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("sink read: %v", err)
	}
}

// mapper builds the Mapper a conn with cfg uses for prefix, to predict
// the addresses a flow must use.
func mapper(t testing.TB, prefix netip.Prefix, bits int) *flowaddr.Mapper {
	t.Helper()
	if bits == 0 {
		bits = conn.DefaultBits
	}
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: prefix, Bits: bits})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// addrOf returns the address of bucket b of m.
func addrOf(m *flowaddr.Mapper, h uint64) netip.Addr {
	return netip.AddrFrom16(m.Addr16(m.Bucket(h)))
}

// staticNeighbor gives from's device fromDev a permanent neighbour entry
// for addr, an address of to's device toDev, with that device's MAC.
func staticNeighbor(t testing.TB, from *testutil.Netns, fromDev string, to *testutil.Netns, toDev string, addr netip.Addr) {
	t.Helper()
	var mac string
	if err := to.Do(func() error {
		ifi, err := net.InterfaceByName(toDev)
		if err == nil {
			mac = ifi.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	from.Run(t, "ip", "-6", "neigh", "replace", addr.String(), "lladdr", mac, "dev", fromDev, "nud", "permanent")
}
