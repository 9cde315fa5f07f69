package testutil

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// ListenUDP opens a UDP socket bound to at inside n, closed when t ends.
func (n *Netns) ListenUDP(t testing.TB, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.ListenUDP("udp6", net.UDPAddrFromAddrPort(at))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// DialUDP opens a UDP socket inside n connected to to, closed when t ends.
func (n *Netns) DialUDP(t testing.TB, to netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := n.Do(func() (err error) {
		c, err = net.DialUDP("udp6", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ExpectPortTaken checks that no other socket can bind [::]:port in n,
// with SO_REUSEPORT or without: both binds must fail with EADDRINUSE.
func (n *Netns) ExpectPortTaken(t testing.TB, port int) {
	t.Helper()
	for _, reuse := range []bool{false, true} {
		err := n.Do(func() error {
			fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if reuse {
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
					return err
				}
			}
			return unix.Bind(fd, &unix.SockaddrInet6{Port: port})
		})
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("bind [::]:%d with SO_REUSEPORT %v: %v, want EADDRINUSE", port, reuse, err)
		}
	}
}
