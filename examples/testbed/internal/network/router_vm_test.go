package network

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRouterAgentProtocol runs the agent's command loop here, without a
// VM, and drives it as the testbed drives the router VM.
func TestRouterAgentProtocol(t *testing.T) {
	dir := t.TempDir()
	log, err := os.CreateTemp(t.TempDir(), "runner-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	served := make(chan error, 1)
	go func() { served <- serveRouterAgent(dir) }()
	r := &vmRouter{dir: dir, log: log, exited: make(chan struct{})}

	out, err := r.Output("echo", "one", "two")
	if err != nil || string(out) != "one two\n" {
		t.Fatalf("output(echo one two) = %q, %v; want \"one two\\n\"", out, err)
	}
	err = r.Run("sh", "-c", "echo broken >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "broken") {
		t.Errorf("a failing command gave %v; want its exit status and stderr", err)
	}
	if _, err := r.Output("/nonexistent/tc"); err == nil {
		t.Error("a missing program gave no error")
	}
	// Commands keep their order: the fourth sees what the third wrote.
	file := filepath.Join(t.TempDir(), "f")
	if err := r.Run("sh", "-c", "echo 4 > "+file); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Output("cat", file); err != nil || string(out) != "4\n" {
		t.Errorf("cat after write = %q, %v", out, err)
	}

	if err := os.WriteFile(filepath.Join(dir, agentStop), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop")
	}
}

// TestRouterVMGone: once the VM has stopped, a command fails saying so,
// with the runner's output, rather than timing out on an answer that
// cannot come.
func TestRouterVMGone(t *testing.T) {
	log, err := os.CreateTemp(t.TempDir(), "runner-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	log.WriteString("vm: the VM did not boot\n")
	r := &vmRouter{dir: t.TempDir(), log: log, exited: make(chan struct{})}
	close(r.exited)
	_, err = r.Output("tc", "qdisc", "show")
	if err == nil || !strings.Contains(err.Error(), "the VM stopped") || !strings.Contains(err.Error(), "did not boot") {
		t.Errorf("error %v; want one that the VM stopped, with the runner's output", err)
	}
}
