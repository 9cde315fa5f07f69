package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/flowspread/flowspread/internal/netns"
)

// Flow is the goodput of one bulk TCP flow.
type Flow struct {
	Name        string  `json:"name"`
	Path        string  `json:"path"` // "inner" (the tunnel's position) or "outer"
	GoodputMbit float64 `json:"goodput_mbit"`
	Retransmits int     `json:"retransmits"`
	// Intervals are what the sender sent in each of iperf3's one-second
	// reports of the measured time, to cut the run into rounds.
	Intervals []Interval `json:"-"`
}

// Interval is one of iperf3's reports of one stream, from the start of
// the measured time (after the warm-up).
type Interval struct {
	Start, End time.Duration
	Bytes      uint64
}

// GoodputBetween is the flow's rate in Mbit/s over the intervals whose
// middle lies in [from, to): what it carried in one round of a longer
// run. It is 0 when no interval lies there.
func (f Flow) GoodputBetween(from, to time.Duration) float64 {
	var bytes uint64
	var span time.Duration
	for _, iv := range f.Intervals {
		if mid := (iv.Start + iv.End) / 2; mid >= from && mid < to {
			bytes += iv.Bytes
			span += iv.End - iv.Start
		}
	}
	if span <= 0 {
		return 0
	}
	return float64(bytes) * 8 / 1e6 / span.Seconds()
}

// iperf3Report is the part of `iperf3 -c ... -J` output the testbed reads.
type iperf3Report struct {
	Intervals []struct {
		Streams []struct {
			Start   float64 `json:"start"`
			End     float64 `json:"end"`
			Bytes   uint64  `json:"bytes"`
			Omitted bool    `json:"omitted"`
		} `json:"streams"`
	} `json:"intervals"`
	End struct {
		Streams []struct {
			Sender struct {
				Retransmits int `json:"retransmits"`
			} `json:"sender"`
			Receiver struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"receiver"`
		} `json:"streams"`
	} `json:"end"`
	Error string `json:"error"`
}

var errNoStreams = errors.New("iperf3 reported no streams")

// parseIperf3 reads the JSON report of one iperf3 client run and returns
// one result per stream, named prefix-1, prefix-2, ... Goodput is what the
// receiver got, over the measured time (iperf3 leaves out the -O warm-up).
func parseIperf3(data []byte, path, prefix string) ([]Flow, error) {
	var r iperf3Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return nil, fmt.Errorf("iperf3: %s", r.Error)
	}
	if len(r.End.Streams) == 0 {
		return nil, errNoStreams
	}
	flows := make([]Flow, len(r.End.Streams))
	for i, s := range r.End.Streams {
		flows[i] = Flow{
			Name:        prefix + "-" + strconv.Itoa(i+1),
			Path:        path,
			GoodputMbit: s.Receiver.BitsPerSecond / 1e6,
			Retransmits: s.Sender.Retransmits,
		}
	}
	for _, iv := range r.Intervals {
		for i, s := range iv.Streams {
			if s.Omitted || i >= len(flows) {
				continue
			}
			flows[i].Intervals = append(flows[i].Intervals, Interval{
				Start: time.Duration(s.Start * float64(time.Second)),
				End:   time.Duration(s.End * float64(time.Second)),
				Bytes: s.Bytes,
			})
		}
	}
	return flows, nil
}

// StartIperf3Server starts an iperf3 server in ns bound to addr:port. It
// serves one test after another until stopped.
func StartIperf3Server(ns netns.Namespace, addr netip.Addr, port int) (*Server, error) {
	// --forceflush: the "listening" line must come through the pipe at once.
	return startServer(ns, "iperf3 server", "Server listening", 1,
		"iperf3", "-s", "--forceflush", "-B", addr.String(), "-p", strconv.Itoa(port))
}

// Bulk is one iperf3 client run: streams parallel TCP flows to
// Server:Port for Omit (left out of the results) plus Duration, reported
// as flows of Path named Path-1, Path-2, ...
type Bulk struct {
	Server         netip.Addr
	Port, Streams  int
	Duration, Omit time.Duration
	Path           string
}

// RunIperf3 runs b from ns.
func RunIperf3(ctx context.Context, ns netns.Namespace, b Bulk) ([]Flow, error) {
	args := []string{"iperf3", "-c", b.Server.String(), "-p", strconv.Itoa(b.Port),
		"-P", strconv.Itoa(b.Streams), "-t", seconds(b.Duration), "-J"}
	if b.Omit > 0 {
		args = append(args, "-O", seconds(b.Omit))
	}
	out, err := runCapture(ctx, ns, args...)
	flows, perr := parseIperf3(out, b.Path, b.Path)
	if perr != nil {
		if err != nil {
			return nil, fmt.Errorf("%s: %w (%v)", strings.Join(args, " "), perr, err)
		}
		return nil, fmt.Errorf("%s: %w", strings.Join(args, " "), perr)
	}
	if len(flows) != b.Streams {
		return nil, fmt.Errorf("%s: got %d streams, want %d", strings.Join(args, " "), len(flows), b.Streams)
	}
	return flows, nil
}
