package netns

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestOutputTail(t *testing.T) {
	var o Output
	o.Write([]byte("one\ntwo\nthree\n"))
	if got := o.Tail(2); got != "two; three" {
		t.Errorf("Tail(2) = %q, want \"two; three\"", got)
	}
	if got := o.Tail(10); got != "one; two; three" {
		t.Errorf("Tail(10) = %q", got)
	}
}

// TestStartWaitsForReady: Start returns once the output has shown ready
// the asked number of times, not before.
func TestStartWaitsForReady(t *testing.T) {
	cmd := exec.Command("sh", "-c", "echo up; sleep 0.2; echo up; exec sleep 30")
	begin := time.Now()
	p, err := Start(cmd, "sleeper", "up", 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if time.Since(begin) < 200*time.Millisecond || strings.Count(p.Out.String(), "up") != 2 {
		t.Errorf("returned after %v with output %q: before the second \"up\"", time.Since(begin), p.Out)
	}
	if err := p.Stop(5 * time.Second); err == nil || !strings.Contains(err.Error(), "signal: terminated") {
		t.Errorf("Stop of a program that dies of SIGTERM: %v, want its exit", err)
	}
}

func TestStartFailures(t *testing.T) {
	_, err := Start(exec.Command("sh", "-c", "echo broken >&2; exit 3"), "failing", "ready", 1, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "failing exited at start") || !strings.Contains(err.Error(), "broken") {
		t.Errorf("a program that exits at start: %v, want its exit and its output", err)
	}
	_, err = Start(exec.Command("sleep", "30"), "mute", "ready", 1, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not start within 100ms") {
		t.Errorf("a program that never says ready: %v", err)
	}
}

// TestStopKillsAfterGrace: a program that ignores SIGTERM is killed.
func TestStopKillsAfterGrace(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"), "stubborn", "ready", 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "was killed") {
		t.Errorf("Stop: %v, want that it was killed", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Error("still running after Stop")
	}
}

// TestDeleteKillsLeftovers: Delete kills what still runs in the
// namespace, which would keep it alive, and removes it.
func TestDeleteKillsLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces: run the tests as root (CI does)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command from iproute2")
	}
	n, err := Add("fs-test-" + RandomID())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start(n.Command("sh", "-c", "echo ready; exec sleep 60"), "sleeper", "ready", 1, 10*time.Second)
	if err != nil {
		n.Delete()
		t.Fatal(err)
	}
	if out, err := n.Output("ip", "-o", "link", "show", "lo"); err != nil || !strings.Contains(string(out), "lo") {
		t.Errorf("Output in the namespace: %q, %v", out, err)
	}
	if err := n.Run("false"); err == nil || !strings.Contains(err.Error(), "in namespace "+string(n)) {
		t.Errorf("a failing command: %v, want an error naming the namespace", err)
	}
	if err := n.Delete(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Error("the process in the namespace survived Delete")
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), string(n)) {
		t.Errorf("%s still listed after Delete", n)
	}
}
