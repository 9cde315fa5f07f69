package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Namespace is a network namespace made with `ip netns add`, by name.
type Namespace string

// RandomID returns 8 random hex digits, to name namespaces and
// interfaces so that parallel runs and a killed run's leftovers never
// collide.
func RandomID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Add makes the namespace name, with nothing in it but a loopback that
// is down.
func Add(name string) (Namespace, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return Namespace(name), nil
}

// Delete kills every other process left in n, which would keep it alive
// after `ip netns del`, then deletes it with every interface in it. This
// process is spared: a thread of it that entered n (a test's Do on the
// main thread) makes `ip netns pids` list it.
func (n Namespace) Delete() error {
	out, _ := exec.Command("ip", "netns", "pids", string(n)).Output()
	self := strconv.Itoa(os.Getpid())
	var pids []string
	for _, pid := range strings.Fields(string(out)) {
		if pid != self {
			pids = append(pids, pid)
		}
	}
	if len(pids) > 0 {
		exec.Command("kill", append([]string{"-KILL"}, pids...)...).Run()
	}
	if out, err := exec.Command("ip", "netns", "del", string(n)).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", n, err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns an unstarted command that runs args inside n.
func (n Namespace) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", string(n)}, args...)...)
}

// CommandContext is Command, interrupted (os.Interrupt) when ctx ends and
// killed 5 s later: `ip netns exec` replaces itself with the program, so
// the signal reaches the program, which gets a chance to print what it
// measured.
func (n Namespace) CommandContext(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", string(n)}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs args inside n; the error carries the command and its output.
func (n Namespace) Run(args ...string) error {
	_, err := n.CombinedOutput(args...)
	return err
}

// CombinedOutput runs args inside n and returns its stdout and stderr
// together; the error carries the command and that output.
func (n Namespace) CombinedOutput(args ...string) ([]byte, error) {
	out, err := n.Command(args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in namespace %s: %s: %w: %s", n, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Output runs args inside n and returns its stdout; the error carries the
// command and its stderr.
func (n Namespace) Output(args ...string) ([]byte, error) {
	cmd := n.Command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("in namespace %s: %s: %w: %s", n, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// IPBatch runs iproute2 commands (one per line, without the leading "ip")
// in n with a single process: under a VM's emulation every process start
// costs a tenth of a second.
func (n Namespace) IPBatch(lines ...string) error {
	cmd := exec.Command("ip", "-n", string(n), "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("in namespace %s: ip -batch: %w: %s\ncommands:\n%s", n, err, bytes.TrimSpace(out), strings.Join(lines, "\n"))
	}
	return nil
}
