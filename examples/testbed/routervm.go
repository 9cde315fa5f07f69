package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
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

// commander runs commands where the router is: a namespace on this
// machine, or the router VM.
type commander interface {
	run(args ...string) error
	output(args ...string) ([]byte, error)
}

var _ commander = netns("")

// The router VM's network cards, by the MAC address scripts/vm gives the
// Nth -n tap, and the names the agent gives them.
const (
	routerVMClientMAC = "52:54:00:00:00:01"
	routerVMServerMAC = "52:54:00:00:00:02"
)

// Files of the agent's directory.
const (
	agentReady  = "ready"  // the router is set up
	agentFailed = "failed" // it could not be: why
	agentStop   = "stop"   // the testbed is done with it
)

// agentResult is the outcome of one command, as res-N.json holds it.
type agentResult struct {
	Stdout []byte `json:"stdout"`
	Stderr string `json:"stderr"`
	Err    string `json:"err,omitempty"`
}

// routerAgentMain is `testbed router-agent DIR`, in the VM: it sets the
// router up on the VM's two network cards, then runs the commands the
// testbed leaves in DIR until it finds DIR/stop.
func routerAgentMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: testbed router-agent DIR")
		return 2
	}
	dir := args[0]
	if err := setUpRouterVM(); err != nil {
		os.WriteFile(filepath.Join(dir, agentFailed), []byte(err.Error()), 0o644)
		fmt.Fprintln(os.Stderr, "testbed router-agent:", err)
		return 1
	}
	if err := os.WriteFile(filepath.Join(dir, agentReady), nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "testbed router-agent:", err)
		return 1
	}
	if err := serveRouterAgent(dir); err != nil {
		fmt.Fprintln(os.Stderr, "testbed router-agent:", err)
		return 1
	}
	return 0
}

// serveRouterAgent runs the commands cmd-1.json, cmd-2.json, ... that
// appear in dir, one at a time, writing each one's result, until dir/stop
// appears.
func serveRouterAgent(dir string) error {
	for seq := 1; ; seq++ {
		name := filepath.Join(dir, fmt.Sprintf("cmd-%d.json", seq))
		var data []byte
		for {
			var err error
			if data, err = os.ReadFile(name); err == nil {
				break
			}
			if _, err := os.Stat(filepath.Join(dir, agentStop)); err == nil {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		var res agentResult
		var cmdArgs []string
		if err := json.Unmarshal(data, &cmdArgs); err != nil || len(cmdArgs) == 0 {
			res.Err = fmt.Sprintf("bad command %q", data)
		} else {
			cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			res.Stdout, res.Stderr = out, stderr.String()
			if err != nil {
				res.Err = err.Error()
			}
		}
		if err := writeFileAtomic(filepath.Join(dir, fmt.Sprintf("res-%d.json", seq)), res); err != nil {
			return err
		}
	}
}

// setUpRouterVM names the VM's cards rc and rs, as the router namespace's
// are, and gives them the router's addresses and routes.
func setUpRouterVM() error {
	names := map[string]string{routerVMClientMAC: routerClientIf, routerVMServerMAC: routerServerIf}
	links, err := filepath.Glob("/sys/class/net/*/address")
	if err != nil {
		return err
	}
	found := 0
	for _, l := range links {
		mac, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		if name, ok := names[strings.TrimSpace(string(mac))]; ok {
			dev := filepath.Base(filepath.Dir(l))
			if out, err := exec.Command("ip", "link", "set", dev, "name", name).CombinedOutput(); err != nil {
				return fmt.Errorf("rename %s to %s: %w: %s", dev, name, err, bytes.TrimSpace(out))
			}
			found++
		}
	}
	if found != len(names) {
		return fmt.Errorf("the VM has %d of its 2 network cards (MAC %s and %s): is virtio_net missing from its kernel?", found, routerVMClientMAC, routerVMServerMAC)
	}
	if out, err := exec.Command("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0").CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl: %w: %s", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(routerLinkCommands(), "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch: %w: %s", err, bytes.TrimSpace(out))
	}
	for _, dev := range []string{routerClientIf, routerServerIf} {
		if out, err := exec.Command("ethtool", append([]string{"-K", dev}, segmentationOff...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("ethtool -K %s: %w: %s", dev, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// writeFileAtomic writes v as JSON to name through a rename, so that a
// reader polling for name never sees it half written.
func writeFileAtomic(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(name+".tmp", data, 0o644); err != nil {
		return err
	}
	return os.Rename(name+".tmp", name)
}

// vmRouter is the router VM, seen from the testbed: a commander whose
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

func (r *vmRouter) run(args ...string) error {
	_, err := r.output(args...)
	return err
}

func (r *vmRouter) output(args ...string) ([]byte, error) {
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

// routerVMOptions says how to start the router VM.
type routerVMOptions struct {
	Runner  string // scripts/vm
	OutDir  string // shared with the VM: the agent's binary and directory go here
	MemMB   int
	Timeout time.Duration
}

// startRouterVM boots the router VM on the taps clientTap and serverTap
// and waits until its agent has set the router up.
func startRouterVM(opts routerVMOptions, self, clientTap, serverTap string, progress func(string)) (*vmRouter, error) {
	out, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	// The VM hides the host's /tmp (where `go run` builds): the agent's
	// binary travels in the shared directory.
	pid := strconv.Itoa(os.Getpid())
	bin := filepath.Join(out, ".testbed-router-"+pid)
	if err := copyFile(self, bin); err != nil {
		return nil, fmt.Errorf("copy this program into %s for the router VM: %w", out, err)
	}
	dir := filepath.Join(out, ".router-"+pid)
	os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		os.Remove(bin)
		return nil, err
	}
	log, err := os.CreateTemp("", "fstb-router-vm-*.log")
	if err != nil {
		os.Remove(bin)
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
		os.Remove(bin)
		os.RemoveAll(dir)
		return nil, fmt.Errorf("run %s: %w", opts.Runner, err)
	}
	r := &vmRouter{dir: dir, runner: cmd, log: log, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(r.exited)
	}()
	progress("booting the router VM (Debian's stock kernel under scripts/vm)")
	// The binary is loaded at once; it goes when the agent is ready or
	// has failed.
	defer os.Remove(bin)
	const bootTimeout = 3 * time.Minute
	deadline := time.Now().Add(bootTimeout)
	for {
		if _, err := os.Stat(filepath.Join(dir, agentReady)); err == nil {
			return r, nil
		}
		if why, err := os.ReadFile(filepath.Join(dir, agentFailed)); err == nil {
			r.stop()
			return nil, fmt.Errorf("the router VM could not set the router up: %s", why)
		}
		select {
		case <-r.exited:
			msg := r.tail()
			r.stop()
			return nil, fmt.Errorf("the router VM stopped before it was ready: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("the router VM was not ready after %v", bootTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newRouterVMTopology builds the client and server namespaces on this
// machine and the router in a VM between them (see the top of this file).
// On error it removes everything it made.
func newRouterVMTopology(opts topologyOptions, vm routerVMOptions) (t *Topology, err error) {
	var suffix [3]byte
	rand.Read(suffix[:])
	id := hex.EncodeToString(suffix[:])
	prefix := "fstb-" + id + "-"
	t = &Topology{
		Client: netns(prefix + "client"), Server: netns(prefix + "server"),
		ClientHost: clientHost, ServerHost: serverHost,
		ClientSite: clientSite, ServerSite: serverSite,
	}
	made := t // t is nil on the error returns
	defer func() {
		if err != nil {
			made.Close()
		}
	}()
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	progress("creating namespaces " + prefix + "{client,server}, the router in a VM")
	for _, n := range []netns{t.Client, t.Server} {
		if err := t.addNamespace(n); err != nil {
			return nil, err
		}
	}
	// The taps start in this namespace, where QEMU opens them, and move
	// into the hosts' once the VM holds them.
	clientTap, serverTap := "fstb"+id+"c", "fstb"+id+"s"
	for _, tap := range []string{clientTap, serverTap} {
		if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip tuntap add %s: %w: %s", tap, err, bytes.TrimSpace(out))
		}
		t.taps = append(t.taps, tap)
	}
	r, err := startRouterVM(vm, opts.Self, clientTap, serverTap, progress)
	if err != nil {
		return nil, err
	}
	t.routerVM = r
	t.RouterCtl = r

	progress("linking client-router VM-server")
	for _, h := range []struct {
		ns       netns
		tap, dev string
		lines    []string
	}{
		{t.Client, clientTap, clientIf, clientLinkCommands()},
		{t.Server, serverTap, serverIf, serverLinkCommands()},
	} {
		if out, err := exec.Command("ip", "link", "set", "dev", h.tap, "netns", string(h.ns)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("move %s into %s: %w: %s", h.tap, h.ns, err, bytes.TrimSpace(out))
		}
		if err := h.ns.ipBatch(append([]string{"link set " + h.tap + " name " + h.dev}, h.lines...)...); err != nil {
			return nil, err
		}
		if err := h.ns.run(append([]string{"ethtool", "-K", h.dev}, segmentationOff...)...); err != nil {
			return nil, err
		}
	}
	t.taps = nil // they live and die with the namespaces now

	progress("checking that the client reaches the server")
	if err := t.checkReach(t.Client, t.ServerHost); err != nil {
		return nil, err
	}
	return t, nil
}
