package main

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// tcpSink accepts one connection on addr inside ns and discards what it
// reads; the returned channel gets the byte count when the sender closes.
func tcpSink(b *testing.B, ns *testutil.Netns, addr netip.AddrPort) <-chan int64 {
	b.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return err }); err != nil {
		b.Fatal(err)
	}
	got := make(chan int64, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	return got
}

// BenchmarkTunnelTCP sends bulk TCP from A to B through the tunnel, one
// 64 KiB write per op, without spreading and with it, against plain TCP
// over the same veth pair without a tunnel. The MB/s column is the
// throughput; allocs/op counts every allocation in the process, the
// tunnel's goroutines included.
func BenchmarkTunnelTCP(b *testing.B) {
	for _, bc := range []struct {
		name   string
		tunnel bool
		mode   spreadMode
	}{
		{"direct", false, spreadOff},
		{"off", true, spreadOff},
		{"both", true, spreadBoth},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newTwoHosts(b)
			to := netip.AddrPortFrom(linkB, 7100)
			if bc.tunnel {
				cfgA, cfgB := endConfigs(bc.mode, false)
				startEnd(b, h.a, cfgA)
				startEnd(b, h.b, cfgB)
				to = netip.AddrPortFrom(innerB6.Addr(), 7100)
			}
			got := tcpSink(b, h.b, to)
			c, err := dialTCP(h.a, to)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute)) // a safety net against hangs
			chunk := make([]byte, 64<<10)
			var sent int64
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			for b.Loop() {
				n, err := c.Write(chunk)
				sent += int64(n)
				if err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			if n := <-got; n != sent {
				b.Fatalf("B received %d bytes of %d", n, sent)
			}
		})
	}
}
