package network

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The router VM's network cards, by the MAC address scripts/vm gives the
// Nth -n tap, and the names the agent gives them.
const (
	routerVMClientMAC = "52:54:00:00:00:01"
	routerVMServerMAC = "52:54:00:00:00:02"
)

// Files of the agent's directory.
const (
	agentReady  = "ready"      // the router is set up
	agentFailed = "failed"     // it could not be: why
	agentStop   = "stop"       // the testbed is done with it
	agentSetup  = "setup.json" // the router's setup: a routerSetup
)

// routerSetup is how the agent sets the router up, as the topology's
// address plan says: sysctls (forwarding) and ip -batch lines.
type routerSetup struct {
	Sysctls []string `json:"sysctls"`
	IP      []string `json:"ip"`
}

// agentResult is the outcome of one command, as res-N.json holds it.
type agentResult struct {
	Stdout []byte `json:"stdout"`
	Stderr string `json:"stderr"`
	Err    string `json:"err,omitempty"`
}

// RouterAgentMain is `testbed router-agent DIR`, in the VM: it sets the
// router up on the VM's two network cards, then runs the commands the
// testbed leaves in DIR until it finds DIR/stop.
func RouterAgentMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: testbed router-agent DIR")
		return 2
	}
	dir := args[0]
	if err := setUpRouterVM(dir); err != nil {
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
// are, and gives them the router's addresses and routes from dir's setup.
func setUpRouterVM(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, agentSetup))
	if err != nil {
		return err
	}
	var setup routerSetup
	if err := json.Unmarshal(data, &setup); err != nil {
		return fmt.Errorf("%s: %w", agentSetup, err)
	}
	names := map[string]string{routerVMClientMAC: RouterClientIf, routerVMServerMAC: RouterServerIf}
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
	sysctls := append([]string{"-q", "-w",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"}, setup.Sysctls...)
	if out, err := exec.Command("sysctl", sysctls...).CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl: %w: %s", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(setup.IP, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch: %w: %s", err, bytes.TrimSpace(out))
	}
	for _, dev := range []string{RouterClientIf, RouterServerIf} {
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
