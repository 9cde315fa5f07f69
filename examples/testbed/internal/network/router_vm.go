package network

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowspread/flowspread/internal/netns"
)

// The router in a VM (-vm router, and -vm auto where this kernel lacks the
// qdisc): only the router needs Debian's stock kernel. The client and
// server namespaces stay on this machine, where the tunnels, iperf3 and
// irtt run at native speed, and the router is a VM (scripts/vm) whose two
// network cards sit on tap devices in the client and server namespaces:
//
//	client ==c0 (tap)--[QEMU]--rc== router VM ==rs--[QEMU]--(tap) s0== server
//
// Every frame crosses from this kernel into the VM's through QEMU, as over
// a cable: no flow hash can reach the router, so no wire is needed. Under
// software emulation a pass through a user-space tunnel end costs about
// half a millisecond; here it costs what it costs on this machine, and
// only the router, which does nothing but forward and queue, is emulated.
//
// The testbed drives the router through an agent, this same program run as
// `testbed router-agent DIR` in the VM. DIR, in the shared output
// directory, carries the commands (cmd-N.json: the arguments) and their
// results (res-N.json), one at a time: the tc commands that shape the
// router and read its qdiscs' counters.

// vmRouter is the router VM, seen from the testbed: a Router whose
// commands the agent runs.
type vmRouter struct {
	dir    string
	runner *exec.Cmd
	log    *os.File // the runner's output, shown when the VM fails
	exited chan struct{}

	mu  sync.Mutex
	seq int
}

// routerCommandTimeout bounds one command in the VM: the agent polls every
// 10 ms, and tc takes a fraction of a second even under emulation.
const routerCommandTimeout = 30 * time.Second

// Run runs args in the router VM.
func (r *vmRouter) Run(args ...string) error {
	_, err := r.Output(args...)
	return err
}

// Output runs args in the router VM and returns its stdout.
func (r *vmRouter) Output(args ...string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	if err := writeFileAtomic(filepath.Join(r.dir, fmt.Sprintf("cmd-%d.json", r.seq)), args); err != nil {
		return nil, err
	}
	resName := filepath.Join(r.dir, fmt.Sprintf("res-%d.json", r.seq))
	deadline := time.Now().Add(routerCommandTimeout)
	for {
		data, err := os.ReadFile(resName)
		if err == nil {
			var res agentResult
			if err := json.Unmarshal(data, &res); err != nil {
				return nil, fmt.Errorf("in the router VM: %s: unreadable result: %w", strings.Join(args, " "), err)
			}
			if res.Err != "" {
				return res.Stdout, fmt.Errorf("in the router VM: %s: %s: %s", strings.Join(args, " "), res.Err, strings.TrimSpace(res.Stderr))
			}
			return res.Stdout, nil
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("in the router VM: %s: the VM stopped: %s", strings.Join(args, " "), r.tail())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("in the router VM: %s: no answer after %v", strings.Join(args, " "), routerCommandTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tail returns the end of the runner's output.
func (r *vmRouter) tail() string {
	data, _ := os.ReadFile(r.log.Name())
	s := strings.TrimSpace(string(data))
	if len(s) > 1500 {
		s = "..." + s[len(s)-1500:]
	}
	return s
}

// stop asks the agent to finish, waits for the VM to power off, and
// removes the agent's directory.
func (r *vmRouter) stop() error {
	var err error
	if werr := os.WriteFile(filepath.Join(r.dir, agentStop), nil, 0o644); werr != nil {
		r.runner.Process.Kill()
	}
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		r.runner.Process.Kill()
		<-r.exited
		err = errors.New("the router VM did not stop in 30 s: killed")
	}
	r.log.Close()
	os.Remove(r.log.Name())
	os.RemoveAll(r.dir)
	return err
}

// VMOptions say how to start the router VM.
type VMOptions struct {
	Runner  string // scripts/vm
	OutDir  string // shared with the VM: the agent's binary and directory go here
	MemMB   int
	Timeout time.Duration
}

// startRouterVM boots the router VM on the taps clientTap and serverTap
// and waits until its agent has set the router up as setup says.
func startRouterVM(opts VMOptions, self, clientTap, serverTap string, setup routerSetup, progress func(string)) (*vmRouter, error) {
	out, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	// The VM hides the host's /tmp (where `go run` builds): the agent's
	// binary travels in the shared directory. It is loaded at once, and
	// goes when the agent is ready or has failed.
	pid := strconv.Itoa(os.Getpid())
	bin := filepath.Join(out, ".testbed-router-"+pid)
	if err := CopyFile(self, bin); err != nil {
		return nil, fmt.Errorf("copy this program into %s for the router VM: %w", out, err)
	}
	defer os.Remove(bin)
	dir := filepath.Join(out, ".router-"+pid)
	os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, agentSetup), setup); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	log, err := os.CreateTemp("", "fstb-router-vm-*.log")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(opts.Runner, "-m", strconv.Itoa(opts.MemMB), "-c", "2",
		"-t", strconv.Itoa(int(opts.Timeout/time.Second)), "-n", clientTap, "-n", serverTap,
		"--", bin, "router-agent", dir)
	cmd.Dir = out
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		os.Remove(log.Name())
		os.RemoveAll(dir)
		return nil, fmt.Errorf("run %s: %w", opts.Runner, err)
	}
	r := &vmRouter{dir: dir, runner: cmd, log: log, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(r.exited)
	}()
	progress("booting the router VM (Debian's stock kernel under scripts/vm)")
	if err := r.waitReady(3 * time.Minute); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// waitReady waits until the agent says the router is set up, or that it
// failed, or the VM stops, or timeout passes.
func (r *vmRouter) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(filepath.Join(r.dir, agentReady)); err == nil {
			return nil
		}
		if why, err := os.ReadFile(filepath.Join(r.dir, agentFailed)); err == nil {
			return fmt.Errorf("the router VM could not set the router up: %s", why)
		}
		select {
		case <-r.exited:
			return fmt.Errorf("the router VM stopped before it was ready: %s", r.tail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the router VM was not ready after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// vmRouterKind is the router in a VM: the client and server namespaces
// stay on this machine, and the VM's two network cards sit on tap
// devices in them.
type vmRouterKind struct {
	opts VMOptions
	self string
	id   string
}

func (r *vmRouterKind) namespaces(*Topology) ([]netns.Namespace, string) {
	return nil, ", the router in a VM"
}

// link boots the router VM on two taps, which start in this namespace,
// where QEMU opens them, and move into the hosts' once the VM holds them.
func (r *vmRouterKind) link(t *Topology, progress func(string)) error {
	clientTap, serverTap := "fstb"+r.id+"c", "fstb"+r.id+"s"
	for _, tap := range []string{clientTap, serverTap} {
		if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
			return fmt.Errorf("ip tuntap add %s: %w: %s", tap, err, bytes.TrimSpace(out))
		}
		t.taps = append(t.taps, tap)
	}
	setup := routerSetup{Sysctls: t.plan.forwardingSysctls(), IP: t.plan.routerLinkCommands()}
	vm, err := startRouterVM(r.opts, r.self, clientTap, serverTap, setup, progress)
	if err != nil {
		return err
	}
	t.routerVM, t.Router = vm, vm

	progress("linking client-router VM-server")
	edge, edgeIf := t.edge()
	for _, h := range []struct {
		ns       netns.Namespace
		tap, dev string
		lines    []string
	}{
		{edge, clientTap, edgeIf, t.edgeCommands()},
		{t.Server, serverTap, serverIf, t.plan.serverLinkCommands()},
	} {
		if out, err := exec.Command("ip", "link", "set", "dev", h.tap, "netns", string(h.ns)).CombinedOutput(); err != nil {
			return fmt.Errorf("move %s into %s: %w: %s", h.tap, h.ns, err, bytes.TrimSpace(out))
		}
		if err := h.ns.IPBatch(append([]string{"link set " + h.tap + " name " + h.dev}, h.lines...)...); err != nil {
			return err
		}
		if err := h.ns.Run(append([]string{"ethtool", "-K", h.dev}, segmentationOff...)...); err != nil {
			return err
		}
	}
	t.taps = nil // they live and die with the namespaces now
	return nil
}
