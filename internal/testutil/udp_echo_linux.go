package testutil

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// UDPEchoServer echoes each UDP datagram to addr inside ns until the test
// ends.
func UDPEchoServer(t testing.TB, ns *Netns, addr netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// UDPFlows sends from n sockets in ns (n inner flows: distinct source
// ports) to the echo server at addr, rounds datagrams each, one after the
// other's echo, resending each up to 5 times for datagrams lost on the
// way. With rounds 2, a flow's second datagram goes on the pair the
// first one's answer taught a learning tunnel end.
func UDPFlows(ns *Netns, addr netip.AddrPort, n, rounds int) error {
	socks := make([]*net.UDPConn, n)
	defer func() {
		for _, s := range socks {
			if s != nil {
				s.Close()
			}
		}
	}()
	if err := ns.Do(func() error {
		for i := range socks {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
			if err != nil {
				return err
			}
			socks[i] = c
		}
		return nil
	}); err != nil {
		return err
	}
	var echoed atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, s := range socks {
		wg.Go(func() {
			buf := make([]byte, 64)
			for round := range rounds {
				msg := fmt.Appendf(nil, "flow %d round %d", i, round)
				if !echoedOn(s, msg, buf) {
					errs <- fmt.Errorf("flow %d: no echo of round %d after 5 tries", i, round)
					return
				}
			}
			echoed.Add(1)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return fmt.Errorf("%d of %d flows echoed: %w", echoed.Load(), n, err)
	}
	return nil
}

// echoedOn sends msg on s until its echo comes back, at most 5 times.
func echoedOn(s *net.UDPConn, msg, buf []byte) bool {
	for range 5 {
		if _, err := s.Write(msg); err != nil {
			return false
		}
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		if m, err := s.Read(buf); err == nil && bytes.Equal(buf[:m], msg) {
			return true
		}
	}
	return false
}
