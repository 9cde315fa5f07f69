package testutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	labns "github.com/flowspread/flowspread/internal/netns"
)

// Process is a program a test runs in a namespace until the test ends.
// Out holds its standard output and error.
type Process struct {
	*labns.Process
}

// StartProcess runs argv in ns and waits until its output contains ready,
// failing t if it exits first or takes over 30 s. When the test ends it
// gets SIGTERM, so it can remove what it made, and SIGKILL 10 s later.
func StartProcess(t testing.TB, ns *Netns, ready string, argv ...string) *Process {
	t.Helper()
	p, err := labns.Start(ns.Command(argv...), filepath.Base(argv[0])+" in "+ns.Name, ready, 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return &Process{p}
}

// Stop sends sig (nil: none, the process ends by itself), waits up to 30 s
// for the exit and fails t unless it was clean.
func (p *Process) Stop(t testing.TB, sig os.Signal) {
	t.Helper()
	if sig != nil {
		if err := p.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-p.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit: %s", p.Name, p.Out)
	}
	if p.Err() != nil {
		t.Errorf("%s exited with %v: %s", p.Name, p.Err(), p.Out)
	}
}

// WaitFor polls cond until it holds, and fails t after 30 s: a guard
// against a hang, not a speed check.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
