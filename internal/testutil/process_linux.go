package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is a program a test runs in a namespace until the test ends.
type Process struct {
	Name   string
	Out    *LockedBuffer // its standard output and error
	cmd    interface{ Signal(os.Signal) error }
	exited chan struct{} // closed once it exited; then err is its exit
	err    error
}

// StartProcess runs argv in ns and waits until its output contains ready,
// failing t if it exits first or takes over 30 s. When the test ends it
// gets SIGTERM, so it can remove what it made, and SIGKILL 10 s later.
func StartProcess(t testing.TB, ns *Netns, ready string, argv ...string) *Process {
	t.Helper()
	cmd := ns.Command(argv...)
	p := &Process{Name: filepath.Base(argv[0]) + " in " + ns.Name, Out: &LockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd.Process
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Signal(syscall.SIGTERM) // does nothing once it exited
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Signal(syscall.SIGKILL)
			<-p.exited
		}
	})
	WaitFor(t, p.Name+" to come up", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v: %s", p.Name, p.err, p.Out)
		default:
		}
		return strings.Contains(p.Out.String(), ready)
	})
	return p
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Signal(sig) }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the process exited, once Exited is closed.
func (p *Process) Err() error { return p.err }

// Stop sends sig (nil: none, the process ends by itself), waits up to 30 s
// for the exit and fails t unless it was clean.
func (p *Process) Stop(t testing.TB, sig os.Signal) {
	t.Helper()
	if sig != nil {
		if err := p.cmd.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit: %s", p.Name, p.Out)
	}
	if p.err != nil {
		t.Errorf("%s exited with %v: %s", p.Name, p.err, p.Out)
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
