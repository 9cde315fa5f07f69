package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/flowspread/flowspread/internal/testutil"
)

// BenchmarkWireGuardTCP measures TCP throughput through a wgspread
// interface pair over a veth, with wireguard-go's own StdNetBind
// (-stock-bind, the baseline) and with the spreading Bind, for one and
// four TCP streams from A to B. One op is one 64 KiB write; MB/s is the
// goodput. The wire is a bare veth on a shared machine: it compares the
// two binds' cost, not what a real path gives.
func BenchmarkWireGuardTCP(b *testing.B) {
	testutil.SkipUnlessRoot(b)
	bin := buildWgspread(b)
	for _, bind := range []struct {
		name  string
		flags []string
	}{{"stdnetbind", []string{"-stock-bind"}}, {"spread", nil}} {
		b.Run(bind.name, func(b *testing.B) {
			w := newWgTunnel(b, bin, bind.flags...)
			sink := netip.AddrPortFrom(e2eInnerB, 7001)
			tcpDiscardServer(b, w.nsB, sink)
			// The first handshake is not what we measure.
			if out, err := w.nsA.Output("ping", "-c", "1", "-W", "5", e2eInnerB.String()); err != nil {
				b.Fatalf("ping: %v: %s%s", err, out, w.logs())
			}
			for _, streams := range []int{1, 4} {
				b.Run(fmt.Sprint(streams), func(b *testing.B) {
					benchTCP(b, w.nsA, sink, streams)
				})
			}
		})
	}
}

const benchChunk = 64 << 10

// benchTCP sends b.N chunks to the discard server at addr over streams
// connections opened in ns.
func benchTCP(b *testing.B, ns *testutil.Netns, addr netip.AddrPort, streams int) {
	conns := make([]net.Conn, streams)
	if err := ns.Do(func() error {
		for i := range conns {
			c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i, c := range conns {
		n := b.N / streams
		if i < b.N%streams {
			n++
		}
		wg.Go(func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute)) // a hang guard
			for range n {
				if _, err := c.Write(chunk); err != nil {
					errs <- err
					return
				}
			}
			// Wait until the server has read everything: it closes when
			// it sees our FIN.
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// tcpDiscardServer reads and drops every TCP connection to addr inside
// ns, and closes each when its sender is done.
func tcpDiscardServer(tb testing.TB, ns *testutil.Netns, addr netip.AddrPort) {
	tb.Helper()
	tcpServer(tb, ns, addr, func(c net.Conn) { io.Copy(io.Discard, c) })
}
