package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
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
}

// Frames sums both directions.
func (s wireStats) Frames() uint64 { return s.AToBFrames + s.BToAFrames }

// Lost is every frame the wire failed to pass on.
func (s wireStats) Lost() uint64 { return s.KernelDrops + s.SendErrors + s.Oversize }

// since returns the counters accumulated after earlier.
func (s wireStats) since(earlier wireStats) wireStats {
	return wireStats{A: s.A, B: s.B,
		AToBFrames: s.AToBFrames - earlier.AToBFrames, AToBBytes: s.AToBBytes - earlier.AToBBytes,
		BToAFrames: s.BToAFrames - earlier.BToAFrames, BToABytes: s.BToABytes - earlier.BToABytes,
		KernelDrops: s.KernelDrops - earlier.KernelDrops, SendErrors: s.SendErrors - earlier.SendErrors,
		Oversize: s.Oversize - earlier.Oversize}
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
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	go w.run()
	fmt.Println("ready")
	enc := json.NewEncoder(os.Stdout)
	for sig := range sigs {
		enc.Encode(w.stats())
		if sig != syscall.SIGUSR1 {
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
	cmd := ns.command(self, "wire", "-a", a, "-b", b)
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
	if err := w.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
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
