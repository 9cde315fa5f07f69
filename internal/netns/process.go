package netns

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Output collects a program's output while it runs: exec.Cmd writes from
// its own goroutines while others read. The zero value is ready to use.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Tail returns the last n lines written, joined by "; ", for an error
// message.
func (o *Output) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(o.String(), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "; ")
}

// Process is a program kept running, typically in a namespace, until it
// is stopped.
type Process struct {
	Name   string
	Out    *Output // its stdout and stderr, unless the caller took them
	cmd    *exec.Cmd
	exited chan struct{} // closed once it exited; then err is its exit
	err    error
}

// Start starts cmd and waits until its output (stdout and stderr, those
// the caller left unset) has shown ready count times, so that whoever
// comes next finds it listening. It fails if the program exits first, or
// kills it and fails after timeout.
func Start(cmd *exec.Cmd, name, ready string, count int, timeout time.Duration) (*Process, error) {
	p := &Process{Name: name, Out: &Output{}, cmd: cmd, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Out
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(timeout)
	for strings.Count(p.Out.String(), ready) < count {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%s exited at start (%v): %s", name, p.err, p.Out.Tail(8))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("%s did not start within %v: %s", name, timeout, p.Out.Tail(8))
		}
	}
	return p, nil
}

// Signal sends sig to the process; it does nothing once it exited.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is how the process exited, once Exited is closed.
func (p *Process) Err() error { return p.err }

// Kill kills the process and waits for it.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// Stop sends SIGTERM, so the program can remove what it made and print
// what it counted, and kills it if it has not exited after grace. It
// returns an error if the program had to be killed or exited with a
// failure.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return p.exitError()
	default:
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s ignored SIGTERM for %v and was killed: %s", p.Name, grace, p.Out.Tail(8))
	}
	return p.exitError()
}

func (p *Process) exitError() error {
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return fmt.Errorf("%s %v: %s", p.Name, p.err, p.Out.Tail(8))
	}
	return nil
}
