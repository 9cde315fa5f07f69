package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The wire is a forwarder that copies every Ethernet frame between two
// interfaces of its namespace, both ways. The copy is a fresh packet: the
// flow hash the sender's kernel attached to the original (skb->hash, which
// a veth pair carries across namespaces, and which kernel WireGuard takes
// from the inner packet before encrypting) is gone, so the router computes
// its own from the headers it sees, as it would behind a real cable.
//
// The testbed runs it as `testbed wire -a IF -b IF` in the wire namespace.
// It prints "ready" once both sockets are bound, a JSON wireStats line on
// SIGUSR1, and a last one on SIGTERM or SIGINT before it exits.

// wireStats counts what a wire carried since it started.
type wireStats struct {
	A, B        string `json:"-"`
	AToBFrames  uint64 `json:"a_to_b_frames"`
	AToBBytes   uint64 `json:"a_to_b_bytes"`
	BToAFrames  uint64 `json:"b_to_a_frames"`
	BToABytes   uint64 `json:"b_to_a_bytes"`
	KernelDrops uint64 `json:"kernel_drops"` // frames the receive sockets' buffers had no room for
	SendErrors  uint64 `json:"send_errors"`  // frames the kernel refused to send (too big, no buffer)
	Oversize    uint64 `json:"oversize"`     // frames larger than the receive buffer (offloads left on?)
	// Delays counts frames by how long they waited in the wire's receive
	// queue before it read them: Delays[0] under 1 µs, Delays[i] from
	// 2^(i-1) to 2^i µs, the last one everything longer.
	Delays []uint64 `json:"delay_histogram_log2_us"`
}

// delayBuckets is the length of wireStats.Delays: up to 2^23 µs (8 s).
const delayBuckets = 24

// delayBucket returns the histogram bucket of a delay in nanoseconds.
func delayBucket(ns int64) int {
	us := ns / 1000
	if us < 1 {
		return 0
	}
	return min(bits.Len64(uint64(us)), delayBuckets-1)
}

// DelayPercentile returns an upper bound of the p-th percentile of the
// wire's queueing delay, in milliseconds: the top of the bucket that holds
// it. It returns 0 when no frame was timed.
func (s wireStats) DelayPercentile(p float64) float64 {
	var total uint64
	for _, c := range s.Delays {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(total)))
	var seen uint64
	for i, c := range s.Delays {
		seen += c
		if seen >= max(rank, 1) {
			return float64(uint64(1)<<i) / 1000
		}
	}
	return float64(uint64(1)<<(len(s.Delays)-1)) / 1000
}

// Frames sums both directions.
func (s wireStats) Frames() uint64 { return s.AToBFrames + s.BToAFrames }

// Lost is every frame the wire failed to pass on.
func (s wireStats) Lost() uint64 { return s.KernelDrops + s.SendErrors + s.Oversize }

// since returns the counters accumulated after earlier.
func (s wireStats) since(earlier wireStats) wireStats {
	d := wireStats{A: s.A, B: s.B,
		AToBFrames: s.AToBFrames - earlier.AToBFrames, AToBBytes: s.AToBBytes - earlier.AToBBytes,
		BToAFrames: s.BToAFrames - earlier.BToAFrames, BToABytes: s.BToABytes - earlier.BToABytes,
		KernelDrops: s.KernelDrops - earlier.KernelDrops, SendErrors: s.SendErrors - earlier.SendErrors,
		Oversize: s.Oversize - earlier.Oversize, Delays: slices.Clone(s.Delays)}
	for i := range min(len(d.Delays), len(earlier.Delays)) {
		d.Delays[i] -= earlier.Delays[i]
	}
	return d
}

// wireMain is the `wire` subcommand.
func wireMain(args []string) int {
	fs := flag.NewFlagSet("wire", flag.ContinueOnError)
	a := fs.String("a", "", "first interface")
	b := fs.String("b", "", "second interface")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: testbed wire -a IF -b IF\n\nCopies every frame between interfaces IF and IF, both ways, as fresh packets.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *a == "" || *b == "" || *a == *b || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	w, err := openWire(*a, *b)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wire:", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if countersSignal != nil {
		signal.Notify(sigs, countersSignal)
	}
	go w.run()
	fmt.Println("ready")
	enc := json.NewEncoder(os.Stdout)
	for sig := range sigs {
		enc.Encode(w.stats())
		if sig != countersSignal {
			return 0
		}
	}
	return 0
}

// wireProcess is a running `testbed wire` in a namespace.
type wireProcess struct {
	a, b  string
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	last  wireStats
}

var errWireGone = errors.New("the wire forwarder is not running")

// startWire starts the forwarder between interfaces a and b of ns, running
// self (this program), and waits until it is ready.
func startWire(ns netns, self, a, b string) (*wireProcess, error) {
	// The highest priority: the wire stands for a cable, which never waits
	// for a CPU. Under the VM's emulation a wire at normal priority queued
	// frames for tens of milliseconds behind the load generators, and every
	// latency measured through it carried that.
	cmd := ns.command("nice", "-n", "-20", self, "wire", "-a", a, "-b", b)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &tailBuffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			stderr.add(sc.Text())
		}
	}()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the wire forwarder: %w", err)
	}
	w := &wireProcess{a: a, b: b, cmd: cmd, lines: make(chan string, 4), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(w.done)
	}()
	select {
	case line, ok := <-w.lines:
		if ok && line == "ready" {
			return w, nil
		}
		<-w.done
		return nil, fmt.Errorf("the wire forwarder between %s and %s did not start: %s", a, b, stderr.String())
	case <-time.After(20 * time.Second):
		w.cmd.Process.Kill()
		return nil, fmt.Errorf("the wire forwarder between %s and %s did not start within 20 s: %s", a, b, stderr.String())
	}
}

// stats asks the forwarder for its counters.
func (w *wireProcess) stats() (wireStats, error) {
	if err := askCounters(w.cmd.Process); err != nil {
		return w.last, errWireGone
	}
	return w.readStats()
}

func (w *wireProcess) readStats() (wireStats, error) {
	select {
	case line, ok := <-w.lines:
		if !ok {
			return w.last, errWireGone
		}
		var s wireStats
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			return w.last, fmt.Errorf("wire statistics %q: %w", line, err)
		}
		s.A, s.B = w.a, w.b
		w.last = s
		return s, nil
	case <-time.After(10 * time.Second):
		return w.last, errors.New("the wire forwarder did not report its statistics within 10 s")
	}
}

// stop ends the forwarder and returns its final counters.
func (w *wireProcess) stop() (wireStats, error) {
	select {
	case <-w.done:
		return w.last, nil
	default:
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	s, err := w.readStats()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
	}
	return s, err
}

// String names the wire by its interfaces.
func (w *wireProcess) String() string { return strings.Join([]string{w.a, w.b}, "<->") }
