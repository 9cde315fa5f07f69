package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
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

// iperf3Seconds is the length of one iperf3 transfer of BenchmarkIperf3;
// its first second, TCP's slow start, is not counted.
const iperf3Seconds = 5

// BenchmarkIperf3 measures TCP throughput with iperf3 through wgspread
// interface pairs over a veth in namespaces, for one and four streams
// (-P) from A to B: one pair runs wireguard-go's own StdNetBind
// (-stock-bind, the baseline), the other the spreading Bind. One op is
// one iperf3 transfer of iperf3Seconds through each pair, back to back,
// so that both see the same load on a shared machine; the metrics are
// each pair's receiver goodput averaged over the ops, and their ratio.
// Allocations are the test process's only: the tunnels run in the
// wgspread processes. The wire is a bare veth: the figures compare the
// binds' cost, not what a real path gives.
func BenchmarkIperf3(b *testing.B) {
	testutil.SkipUnlessRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("needs iperf3: apt-get install iperf3 (scripts/install-deps)")
	}
	if _, err := exec.LookPath("wg"); err != nil {
		b.Skip("needs the wg command: apt-get install wireguard-tools (scripts/install-deps)")
	}
	if _, err := exec.LookPath("ping"); err != nil {
		b.Skip("needs the ping command: apt-get install iputils-ping")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		b.Skipf("needs /dev/net/tun for the TUN devices: %v", err)
	}
	bin := buildWgspread(b)
	// Registered first, so it runs last: after the processes wrote their
	// final counters at exit.
	var spread *wgTunnel
	b.Cleanup(func() {
		if spread != nil {
			b.Logf("spread tunnel's logs:%s", spread.logs())
		}
	})
	stock := newWgTunnel(b, bin, "-stock-bind")
	spread = newWgTunnel(b, bin)
	for _, w := range []*wgTunnel{stock, spread} {
		testutil.StartProcess(b, w.nsB, "Server listening",
			"iperf3", "-s", "-B", e2eInnerB.String(), "--forceflush")
		// The first handshake is not what we measure.
		if out, err := w.nsA.Output("ping", "-c", "1", "-W", "5", e2eInnerB.String()); err != nil {
			b.Fatalf("ping: %v: %s%s", err, out, w.logs())
		}
	}
	for _, streams := range []int{1, 4} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			b.ReportAllocs()
			var stockBits, spreadBits float64
			for b.Loop() {
				for _, run := range []struct {
					w    *wgTunnel
					bits *float64
				}{{stock, &stockBits}, {spread, &spreadBits}} {
					bps, err := iperf3(run.w.nsA, e2eInnerB, streams, iperf3Seconds)
					if err != nil {
						b.Fatalf("%v%s", err, run.w.logs())
					}
					*run.bits += bps
				}
			}
			b.ReportMetric(stockBits/float64(b.N)/1e6, "stdnetbind-Mbit/s")
			b.ReportMetric(spreadBits/float64(b.N)/1e6, "spread-Mbit/s")
			b.ReportMetric(spreadBits/stockBits, "spread/stdnetbind")
		})
	}
}

// iperf3 runs one TCP transfer of the given seconds, after one second
// not counted (TCP's slow start), with streams streams from ns to the
// iperf3 server at addr and returns the receiver's bits per second.
func iperf3(ns *testutil.Netns, addr netip.Addr, streams, seconds int) (float64, error) {
	cmd := ns.Command("iperf3", "-c", addr.String(), "-J", "-P", strconv.Itoa(streams),
		"-t", strconv.Itoa(seconds), "-O", "1")
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 -P %d: %w: %s", streams, err, out)
	}
	var report struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		return 0, fmt.Errorf("iperf3 -P %d: its JSON report: %w: %s", streams, err, out)
	}
	if report.Error != "" || report.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 -P %d: no throughput: %q", streams, report.Error)
	}
	return report.End.SumReceived.BitsPerSecond, nil
}
