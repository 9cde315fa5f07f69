package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// The test topology: two hosts on one link, each with a spread prefix
// routed to it through the other's link address.
//
//	A (a0) 2001:db8:ff::a, 192.0.2.1 ── 2001:db8:ff::b, 192.0.2.2 (b0) B
//	prefix 2001:db8:a::/64                  prefix 2001:db8:b::/64
//	ft0 198.51.100.1/24, fd00:99::1/64      ft0 198.51.100.2/24, fd00:99::2/64
var (
	linkA   = netip.MustParseAddr("2001:db8:ff::a")
	linkB   = netip.MustParseAddr("2001:db8:ff::b")
	link4A  = netip.MustParseAddr("192.0.2.1")
	link4B  = netip.MustParseAddr("192.0.2.2")
	prefixA = netip.MustParsePrefix("2001:db8:a::/64")
	prefixB = netip.MustParsePrefix("2001:db8:b::/64")
	innerA4 = netip.MustParsePrefix("198.51.100.1/24")
	innerB4 = netip.MustParsePrefix("198.51.100.2/24")
	innerA6 = netip.MustParsePrefix("fd00:99::1/64")
	innerB6 = netip.MustParsePrefix("fd00:99::2/64")
)

const tunPort = 51820

type twoHosts struct {
	a, b *testutil.Netns
}

func newTwoHosts(t testing.TB) *twoHosts {
	t.Helper()
	h := &twoHosts{a: testutil.NewNetns(t), b: testutil.NewNetns(t)}
	testutil.Veth(t, h.a, "a0", h.b, "b0")
	h.a.Run(t, "ip", "addr", "add", linkA.String()+"/64", "dev", "a0", "nodad")
	h.b.Run(t, "ip", "addr", "add", linkB.String()+"/64", "dev", "b0", "nodad")
	h.a.Run(t, "ip", "addr", "add", link4A.String()+"/24", "dev", "a0")
	h.b.Run(t, "ip", "addr", "add", link4B.String()+"/24", "dev", "b0")
	h.a.Run(t, "ip", "-6", "route", "add", prefixB.String(), "via", linkB.String())
	h.b.Run(t, "ip", "-6", "route", "add", prefixA.String(), "via", linkA.String())
	return h
}

// endConfigs returns A's and B's configs for a spread mode of A (B runs
// the matching one), over IPv6 or, with outer4, IPv4 (off only).
func endConfigs(modeA spreadMode, outer4 bool) (a, b config) {
	hashKey, _ := hashKeyFromPSK(testPSK)
	base := config{
		name: "ft0", listenPort: tunPort, psk: testPSK, hashKey: hashKey,
		symmetric: true, mtu: 1420, localRoute: true, batch: 32, gso: true,
	}
	a, b = base, base
	a.peer, b.peer = netip.AddrPortFrom(linkB, tunPort), netip.AddrPortFrom(linkA, tunPort)
	if outer4 {
		a.peer, b.peer = netip.AddrPortFrom(link4B, tunPort), netip.AddrPortFrom(link4A, tunPort)
	}
	a.ours.Prefix, a.theirs.Prefix = prefixA, prefixB
	b.ours.Prefix, b.theirs.Prefix = prefixB, prefixA
	a.addrs = []netip.Prefix{innerA4, innerA6}
	b.addrs = []netip.Prefix{innerB4, innerB6}
	a.spread = modeA
	b.spread = map[spreadMode]spreadMode{spreadOff: spreadOff, spreadSrc: spreadDst, spreadDst: spreadSrc, spreadBoth: spreadBoth}[modeA]
	return a, b
}

// startEnd opens a tunnel end inside ns and runs it until the test ends.
func startEnd(t testing.TB, ns *testutil.Netns, cfg config) *tunnel {
	t.Helper()
	return startEndAt(t, ns, cfg, uint64(time.Now().UnixNano()), nil)
}

// startEndAt is startEnd with the clock reading the end starts at, and a
// function that may change the tunnel before it runs (nil: none).
func startEndAt(t testing.TB, ns *testutil.Netns, cfg config, now uint64, before func(*tunnel)) *tunnel {
	t.Helper()
	var tun *tunnel
	err := ns.Do(func() (err error) {
		tun, err = openTunnel(cfg, now)
		return err
	})
	if err != nil {
		t.Fatalf("open tunnel in %s: %v", ns.Name, err)
	}
	if before != nil {
		before(tun)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tun.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tunnel in %s: %v", ns.Name, err)
		}
	})
	return tun
}

// tcpEchoServer accepts connections on addr inside ns and echoes each
// until the client closes its side.
func tcpEchoServer(t testing.TB, ns *testutil.Netns, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("listen %v: %v", addr, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute)) // a safety net, not a measure
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// dialTCP connects from inside ns.
func dialTCP(ns *testutil.Netns, to netip.AddrPort) (*net.TCPConn, error) {
	return dialTCPWithin(ns, to, 20*time.Second)
}

// dialTCPWithin connects from inside ns, giving up after timeout.
func dialTCPWithin(ns *testutil.Netns, to netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// tcpEcho sends size random bytes from ns to an echo server at to and
// checks that the same bytes come back.
func tcpEcho(ns *testutil.Netns, to netip.AddrPort, size int) error {
	return tcpEchoWithin(ns, to, size, 20*time.Second)
}

// tcpEchoWithin is tcpEcho giving up on the connection after dial.
func tcpEchoWithin(ns *testutil.Netns, to netip.AddrPort, size int, dial time.Duration) error {
	c, err := dialTCPWithin(ns, to, dial)
	if err != nil {
		return fmt.Errorf("dial %v: %w", to, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	data := make([]byte, size)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read the echo from %v: %w", to, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write to %v: %w", to, err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("echo from %v: got %d bytes back, want the %d sent", to, len(got), len(data))
	}
	return nil
}

// udpEchoServer answers every datagram to addr inside ns with a copy.
func udpEchoServer(t testing.TB, ns *testutil.Netns, addr netip.AddrPort) {
	t.Helper()
	var uc *net.UDPConn
	if err := ns.Do(func() (err error) {
		uc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatalf("listen udp %v: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			uc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { uc.Close(); <-done })
}

// udpFlows sends one request from each of n sockets (n inner flows) in ns
// to an echo server at to, retrying a lost one, and checks every echo.
func udpFlows(ns *testutil.Netns, to netip.AddrPort, n int) error {
	conns := make([]*net.UDPConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	err := ns.Do(func() error {
		for i := range conns {
			c, err := net.ListenUDP("udp", nil)
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		return err
	}
	errs := make(chan error, n)
	for i, c := range conns {
		// Two rounds: a flow's first datagram waits on the canonical
		// pair while its own pair opens (unless the peer is open), its
		// second goes on its own pair.
		go func() {
			err := udpRequest(c, to, fmt.Appendf(nil, "flow %d", i))
			if err == nil {
				err = udpRequest(c, to, fmt.Appendf(nil, "flow %d again", i))
			}
			errs <- err
		}()
	}
	var all []error
	for range conns {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func udpRequest(c *net.UDPConn, to netip.AddrPort, msg []byte) error {
	buf := make([]byte, 2048)
	var err error
	for range 10 {
		if _, err = c.WriteToUDPAddrPort(msg, to); err != nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		var n int
		n, _, err = c.ReadFromUDPAddrPort(buf)
		if err == nil && bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
	return fmt.Errorf("udp %q to %v: no echo after 10 tries: %v", msg, to, err)
}

// usedBuckets lists the buckets of our range that sent datagrams.
func usedBuckets(s Stats) map[int]bool {
	m := map[int]bool{}
	for b, n := range s.Conn.SentPerAddress {
		if n > 0 {
			m[b] = true
		}
	}
	return m
}
