package conn_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// TestECNSockets sends batches that interleave flows of every ECN
// codepoint from a conn spreading over addresses, where ECT(0) and
// ECT(1) flows leave from sockets of their own and the rest from the
// canonical one, each socket's datagrams with one sendmmsg. Every
// datagram must arrive with its flow's ECN, from its flow's address and
// the canonical port, and each flow's datagrams in the order sent, also
// for a flow whose ECN changes within a batch.
func TestECNSockets(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	if n := conn.ECNSockets(c); n != 2 {
		t.Fatalf("%d ECN sockets, want 2 (ECT(0) and ECT(1))", n)
	}
	ma := mapper(t, prefixA, 0)
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	ecns := []flowaddr.ECN{flowaddr.NotECT, flowaddr.ECT0, flowaddr.ECT1, flowaddr.CE}
	const flows, perFlow = 16, 12
	var msgs []conn.Message
	for k := range perFlow {
		for f := range flows {
			e := ecns[f%4]
			if f == 0 && k == 2 {
				// Flow 0 is Not-ECT but for one ECT(0) datagram: the
				// first batch goes in order, the others socket by
				// socket.
				e = flowaddr.ECT0
			}
			p := make([]byte, 200)
			binary.BigEndian.PutUint32(p, uint32(f))
			binary.BigEndian.PutUint32(p[4:], uint32(k))
			msgs = append(msgs, conn.Message{Buf: p, Peer: peer, Flow: conn.Flow{Hash: uint64(f+1) * 0x9e3779b97f4a7c15, ECN: e, Valid: true}})
		}
	}
	for i := 0; i < len(msgs); i += 64 {
		if n, err := c.WriteBatch(msgs[i:min(i+64, len(msgs))]); err != nil || n != min(64, len(msgs)-i) {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
	}
	next := make([]uint32, flows)
	for range msgs {
		a := s.read(t)
		f, k := binary.BigEndian.Uint32(a.payload), binary.BigEndian.Uint32(a.payload[4:])
		if f >= flows || k != next[f] {
			t.Fatalf("flow %d: datagram %d arrived, want %d: out of order", f, k, next[f])
		}
		next[f]++
		m := msgs[int(k)*flows+int(f)]
		if a.tclass != int(m.Flow.ECN) {
			t.Errorf("flow %d #%d: traffic class %d, want ECN %d", f, k, a.tclass, m.Flow.ECN)
		}
		if want := netip.AddrPortFrom(addrOf(ma, m.Flow.Hash), port); a.src != want {
			t.Errorf("flow %d #%d: from %v, want %v", f, k, a.src, want)
		}
	}
	if st := c.Stats(); st.Sent != uint64(len(msgs)) || st.SendErrors != 0 {
		t.Errorf("Stats: Sent %d, SendErrors %d; want %d, 0", st.Sent, st.SendErrors, len(msgs))
	}
}

// TestECNSocketsKeepThePort checks that the ECN sockets, which share
// the canonical socket's port, take nothing sent to it, and that no
// other socket can bind the port afterwards, SO_REUSEPORT or not.
func TestECNSocketsKeepThePort(t *testing.T) {
	ns := loopbackNetns(t, prefixA, prefixB)
	c := listenIn(t, ns, conn.Config{Range: conn.Range{Prefix: prefixA}, AcceptUnknown: true})
	if n := conn.ECNSockets(c); n != 2 {
		t.Fatalf("%d ECN sockets, want 2", n)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	ns.ExpectPortTaken(t, port)

	s := newSink(t, ns)
	const n = 200
	dst := &net.UDPAddr{IP: net.ParseIP("2001:db8:a::1"), Port: port}
	for i := range n {
		if _, err := s.uc.WriteToUDP(payload(i, 100), dst); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second)) // a safety net: loopback delivers at once
	msgs := make([]conn.Message, 64)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 1500)
	}
	for got := 0; got < n; {
		k, err := c.ReadBatch(msgs)
		if err != nil {
			t.Fatalf("read %d of %d datagrams sent to the port: %v", got, n, err)
		}
		got += k
	}
}

// TestECNSocketsRefuseATakenPort checks that Listen on a port that
// another socket of this user holds with SO_REUSEPORT fails, as it does
// without the ECN sockets, rather than join that socket's group.
func TestECNSocketsRefuseATakenPort(t *testing.T) {
	ns := loopbackNetns(t, prefixA)
	var port int
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{}); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		port = sa.(*unix.SockaddrInet6).Port
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var c *conn.FlowSpreadConn
	err = ns.Do(func() (err error) {
		c, err = conn.Listen(conn.Config{Range: conn.Range{Prefix: prefixA}, Port: uint16(port), AcceptUnknown: true})
		return err
	})
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on port %d, held by another socket with SO_REUSEPORT: %v, want EADDRINUSE", port, err)
	}
}
