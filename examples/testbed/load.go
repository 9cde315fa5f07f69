package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The loads are real tools, as a reader of the results would run them:
// iperf3 for bulk TCP, irtt (isochronous round-trip tester) for the sparse
// latency probe. Both run with JSON output, parsed here.

// flowResult is the goodput of one bulk TCP flow.
type flowResult struct {
	Name        string  `json:"name"`
	Path        string  `json:"path"` // "inner" (the tunnel's position) or "outer"
	GoodputMbit float64 `json:"goodput_mbit"`
	Retransmits int     `json:"retransmits"`
}

// iperf3Report is the part of `iperf3 -c ... -J` output the testbed reads.
type iperf3Report struct {
	Start struct {
		TestStart struct {
			NumStreams int `json:"num_streams"`
			Duration   int `json:"duration"`
			Omit       int `json:"omit"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Streams []struct {
			Sender struct {
				Bytes         uint64  `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
				Retransmits   int     `json:"retransmits"`
			} `json:"sender"`
			Receiver struct {
				Bytes         uint64  `json:"bytes"`
				Seconds       float64 `json:"seconds"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"receiver"`
		} `json:"streams"`
	} `json:"end"`
	Error string `json:"error"`
}

var errNoStreams = errors.New("iperf3 reported no streams")

// parseIperf3 reads the JSON report of one iperf3 client run and returns
// one result per stream, named prefix-1, prefix-2, ... Goodput is what the
// receiver got, over the measured time (iperf3 leaves out the -O warm-up).
func parseIperf3(data []byte, path, prefix string) ([]flowResult, error) {
	var r iperf3Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", r.Error)
	}
	if len(r.End.Streams) == 0 {
		return nil, errNoStreams
	}
	flows := make([]flowResult, len(r.End.Streams))
	for i, s := range r.End.Streams {
		flows[i] = flowResult{
			Name:        prefix + "-" + strconv.Itoa(i+1),
			Path:        path,
			GoodputMbit: s.Receiver.BitsPerSecond / 1e6,
			Retransmits: s.Sender.Retransmits,
		}
	}
	return flows, nil
}

// irttReport is the part of `irtt client -o -` output the testbed reads.
type irttReport struct {
	RoundTrips []struct {
		Seqno int    `json:"seqno"`
		Lost  string `json:"lost"` // "false", "true", "true_down" or "true_up"
		Delay struct {
			RTT *int64 `json:"rtt"` // nanoseconds; absent when lost
		} `json:"delay"`
	} `json:"round_trips"`
}

// probeResult is what one latency probe measured.
type probeResult struct {
	RTTms []float64 // round-trip times of the answered probes, in send order
	Lost  int
}

var errNoRoundTrips = errors.New("irtt reported no round trips")

// parseIrtt reads the JSON output of one irtt client run.
func parseIrtt(data []byte) (probeResult, error) {
	var r irttReport
	if err := json.Unmarshal(data, &r); err != nil {
		return probeResult{}, fmt.Errorf("irtt JSON: %w", err)
	}
	if len(r.RoundTrips) == 0 {
		return probeResult{}, errNoRoundTrips
	}
	p := probeResult{RTTms: make([]float64, 0, len(r.RoundTrips))}
	for _, rt := range r.RoundTrips {
		if rt.Lost != "false" || rt.Delay.RTT == nil {
			p.Lost++
			continue
		}
		p.RTTms = append(p.RTTms, float64(*rt.Delay.RTT)/1e6)
	}
	return p, nil
}

// daemon is a server process kept running in a namespace for one mode.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	out  *tailBuffer
}

// startDaemon starts args in ns and waits until its output has shown
// ready (a substring) readyCount times, so that clients started next find
// it listening.
func startDaemon(ns netns, name, ready string, readyCount int, args ...string) (*daemon, error) {
	cmd := ns.command(args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{}), out: &tailBuffer{}}
	readyc := make(chan struct{})
	go func() {
		seen := 0
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.out.add(sc.Text())
			if strings.Contains(sc.Text(), ready) {
				if seen++; seen == readyCount {
					close(readyc)
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(d.done)
	}()
	select {
	case <-readyc:
		return d, nil
	case <-d.done:
		return nil, fmt.Errorf("%s exited at start: %s", name, d.out.String())
	case <-time.After(20 * time.Second):
		d.stop()
		return nil, fmt.Errorf("%s did not start listening within 20 s: %s", name, d.out.String())
	}
}

// stop ends the daemon (SIGTERM, then SIGKILL after 3 s) and waits for it.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(3 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// tailBuffer keeps the last lines of a process's output for error
// messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 8 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, line)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "; ")
}

// startIperf3Server starts an iperf3 server in ns bound to addr:port. It
// serves one test after another until stopped.
func startIperf3Server(ns netns, addr netip.Addr, port int) (*daemon, error) {
	// --forceflush: the "listening" line must come through the pipe at once.
	return startDaemon(ns, "iperf3 server", "Server listening", 1,
		"iperf3", "-s", "--forceflush", "-B", addr.String(), "-p", strconv.Itoa(port))
}

// runIperf3 runs an iperf3 client in ns: streams parallel TCP flows to
// server:port for omit (left out of the results) plus duration.
func runIperf3(ctx context.Context, ns netns, server netip.Addr, port, streams int, duration, omit time.Duration, path, prefix string) ([]flowResult, error) {
	args := []string{"iperf3", "-c", server.String(), "-p", strconv.Itoa(port),
		"-P", strconv.Itoa(streams), "-t", seconds(duration), "-J"}
	if omit > 0 {
		args = append(args, "-O", seconds(omit))
	}
	out, err := runCapture(ctx, ns, args...)
	flows, perr := parseIperf3(out, path, prefix)
	if perr != nil {
		if err != nil {
			return nil, fmt.Errorf("%s: %w (%v)", strings.Join(args, " "), perr, err)
		}
		return nil, fmt.Errorf("%s: %w", strings.Join(args, " "), perr)
	}
	if len(flows) != streams {
		return nil, fmt.Errorf("%s: got %d streams, want %d", strings.Join(args, " "), len(flows), streams)
	}
	return flows, nil
}

// probeNice raises the probes' priority above the bulk load's, as if
// they ran on hosts of their own: a probe that waits for a CPU behind
// iperf3 measures the testbed machine, not the network.
const probeNice = "-10"

// irttPort is the port of the irtt servers, one per probe path.
const irttPort = 2112

// startIrttServer starts an irtt server in ns listening on each of binds.
func startIrttServer(ns netns, binds ...netip.AddrPort) (*daemon, error) {
	list := make([]string, len(binds))
	for i, b := range binds {
		list[i] = b.String()
	}
	// --set-src-ip: a reply leaves from the address the request came to,
	// whichever of the server's addresses that is.
	return startDaemon(ns, "irtt server", "ListenerStart", len(binds),
		"nice", "-n", probeNice, "irtt", "server", "-b", strings.Join(list, ","), "--set-src-ip", "-i", "1ms")
}

// runIrtt runs an irtt client in ns sending one small probe every interval
// to server for duration.
func runIrtt(ctx context.Context, ns netns, server netip.AddrPort, interval, duration time.Duration) (probeResult, error) {
	args := []string{"nice", "-n", probeNice, "irtt", "client", "-Q", "-o", "-", "-i", interval.String(), "-d", duration.String(), server.String()}
	out, err := runCapture(ctx, ns, args...)
	p, perr := parseIrtt(out)
	if perr != nil {
		if err != nil {
			return probeResult{}, fmt.Errorf("%s: %w (%v)", strings.Join(args, " "), perr, err)
		}
		return probeResult{}, fmt.Errorf("%s: %w", strings.Join(args, " "), perr)
	}
	return p, nil
}

// runCapture runs args in ns and returns its stdout; the error carries
// the end of its stderr.
func runCapture(ctx context.Context, ns netns, args ...string) ([]byte, error) {
	cmd := ns.commandContext(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = "..." + msg[len(msg)-300:]
		}
		if msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
	}
	return stdout.Bytes(), err
}

// seconds formats d as whole seconds for tools that take them, at least 1.
func seconds(d time.Duration) string {
	s := int((d + time.Second/2) / time.Second)
	return strconv.Itoa(max(s, 1))
}
