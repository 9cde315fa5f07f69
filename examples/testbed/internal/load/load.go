// Package load runs the experiment's loads, the real tools a reader of
// the results would run: iperf3 for bulk TCP, irtt (isochronous
// round-trip tester) for the sparse latency probe. Both run with JSON
// output, which it parses. Clients run for a given time in a namespace;
// servers run until stopped.
package load

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flowspread/flowspread/internal/netns"
)

// Server is a server process kept running in a namespace for one mode.
type Server struct {
	p *netns.Process
}

// startServer starts args in ns and waits until its output has shown
// ready readyCount times, so that clients started next find it listening.
func startServer(ns netns.Namespace, name, ready string, readyCount int, args ...string) (*Server, error) {
	p, err := netns.Start(ns.Command(args...), name, ready, readyCount, 20*time.Second)
	if err != nil {
		return nil, err
	}
	return &Server{p}, nil
}

// Stop ends the server (SIGTERM, then SIGKILL after 3 s) and waits for it.
func (s *Server) Stop() { s.p.Stop(3 * time.Second) }

// runCapture runs args in ns and returns its stdout; the error carries
// the end of its stderr.
func runCapture(ctx context.Context, ns netns.Namespace, args ...string) ([]byte, error) {
	cmd := ns.CommandContext(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = "..." + msg[len(msg)-300:]
		}
		if msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
	}
	return stdout.Bytes(), err
}

// seconds formats d as whole seconds for tools that take them, at least 1.
func seconds(d time.Duration) string {
	s := int((d + time.Second/2) / time.Second)
	return strconv.Itoa(max(s, 1))
}
