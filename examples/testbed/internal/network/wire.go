package network

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
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flowspread/flowspread/internal/netns"
)

// The wire is a forwarder that copies every Ethernet frame between two
// interfaces of its namespace, both ways. The copy is a fresh packet: the
// flow hash the sender's kernel attached to the original (skb->hash, which
// a veth pair carries across namespaces, and which kernel WireGuard takes
// from the inner packet before encrypting) is gone, so the router computes
// its own from the headers it sees, as it would behind a real cable.
//
// The testbed runs it as `testbed wire -a IF -b IF` in the wire namespace.
// It prints "ready" on stderr once both sockets are bound, and on stdout
// a JSON WireStats line on SIGUSR1 and a last one on SIGTERM or SIGINT
// before it exits.

// WireStats counts what a wire carried since it started.
type WireStats struct {
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

// delayBuckets is the length of WireStats.Delays: up to 2^23 µs (8 s).
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
func (s WireStats) DelayPercentile(p float64) float64 {
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
func (s WireStats) Frames() uint64 { return s.AToBFrames + s.BToAFrames }

// Lost is every frame the wire failed to pass on.
func (s WireStats) Lost() uint64 { return s.KernelDrops + s.SendErrors + s.Oversize }

// Since returns the counters accumulated after earlier.
func (s WireStats) Since(earlier WireStats) WireStats {
	d := WireStats{A: s.A, B: s.B,
		AToBFrames: s.AToBFrames - earlier.AToBFrames, AToBBytes: s.AToBBytes - earlier.AToBBytes,
		BToAFrames: s.BToAFrames - earlier.BToAFrames, BToABytes: s.BToABytes - earlier.BToABytes,
		KernelDrops: s.KernelDrops - earlier.KernelDrops, SendErrors: s.SendErrors - earlier.SendErrors,
		Oversize: s.Oversize - earlier.Oversize, Delays: slices.Clone(s.Delays)}
	for i := range min(len(d.Delays), len(earlier.Delays)) {
		d.Delays[i] -= earlier.Delays[i]
	}
	return d
}

// WireMain is the `wire` subcommand.
func WireMain(args []string) int {
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
	if CountersSignal != nil {
		signal.Notify(sigs, CountersSignal)
	}
	go w.run()
	// On stderr: stdout carries only the counters.
	fmt.Fprintln(os.Stderr, "ready")
	enc := json.NewEncoder(os.Stdout)
	for sig := range sigs {
		enc.Encode(w.stats())
		if sig != CountersSignal {
			return 0
		}
	}
	return 0
}

// wireProcess is a running `testbed wire` in a namespace.
type wireProcess struct {
	a, b  string
	p     *netns.Process
	lines chan string // its stdout: one JSON WireStats a line
	last  WireStats
}

var errWireGone = errors.New("the wire forwarder is not running")

// startWire starts the forwarder between interfaces a and b of ns, running
// self (this program), and waits until it is ready.
func startWire(ns netns.Namespace, self, a, b string) (*wireProcess, error) {
	// The highest priority: the wire stands for a cable, which never waits
	// for a CPU. Under the VM's emulation a wire at normal priority queued
	// frames for tens of milliseconds behind the load generators, and every
	// latency measured through it carried that.
	cmd := ns.Command("nice", "-n", "-20", self, "wire", "-a", a, "-b", b)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	w := &wireProcess{a: a, b: b, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	p, err := netns.Start(cmd, "the wire forwarder between "+a+" and "+b, "ready", 1, 20*time.Second)
	if err != nil {
		pw.Close()
		return nil, err
	}
	w.p = p
	go func() {
		<-p.Exited()
		pw.Close()
	}()
	return w, nil
}

// stats asks the forwarder for its counters.
func (w *wireProcess) stats() (WireStats, error) {
	if err := AskCounters(w.p); err != nil {
		return w.last, errWireGone
	}
	return w.readStats()
}

func (w *wireProcess) readStats() (WireStats, error) {
	select {
	case line, ok := <-w.lines:
		if !ok {
			return w.last, errWireGone
		}
		var s WireStats
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
func (w *wireProcess) stop() (WireStats, error) {
	select {
	case <-w.p.Exited():
		return w.last, nil
	default:
	}
	w.p.Signal(syscall.SIGTERM)
	s, err := w.readStats()
	select {
	case <-w.p.Exited():
	case <-time.After(5 * time.Second):
		w.p.Kill()
	}
	return s, err
}

// String names the wire by its interfaces.
func (w *wireProcess) String() string { return strings.Join([]string{w.a, w.b}, "<->") }
