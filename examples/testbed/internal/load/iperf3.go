package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
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
	// Intervals are what the receiver got in each of iperf3's one-second
	// reports of the measured time (what the sender sent, when the
	// client's output lacks the server's report), to cut the run into
	// rounds.
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
	// ServerOutputText is the server's report (--get-server-output),
	// as text: iperf3 sends the server's JSON only when the server runs
	// with -J, which would hide the line the testbed waits for.
	ServerOutputText string `json:"server_output_text"`
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
		for i, st := range iv.Streams {
			if st.Omitted || i >= len(flows) {
				continue
			}
			flows[i].Intervals = append(flows[i].Intervals, Interval{
				Start: seconds64(st.Start), End: seconds64(st.End), Bytes: st.Bytes})
		}
	}
	if received := parseServerIntervals(r.ServerOutputText); len(received) == len(flows) {
		for i := range flows {
			flows[i].Intervals = received[i]
		}
	}
	return flows, nil
}

func seconds64(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// serverInterval is one stream's line of the server's text report:
//
//	[  5]   1.00-2.00   sec  6.00 MBytes  50.3 Mbits/sec
var serverInterval = regexp.MustCompile(`^\[\s*(\d+)\]\s+([\d.]+)-([\d.]+)\s+sec\s+\S+ \S+\s+([\d.]+) ([KMG]?)bits/sec\s*(.*)$`)

// parseServerIntervals reads the receiver's measured intervals of each
// stream from the server's text report, in the order the streams
// connected (the client's order). Warm-up lines ("(omitted)") and the
// totals ("receiver") are left out. It returns nil for text it cannot
// read.
func parseServerIntervals(text string) [][]Interval {
	var order []string
	byID := map[string][]Interval{}
	for line := range strings.Lines(text) {
		m := serverInterval.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || strings.TrimSpace(m[6]) != "" {
			continue
		}
		start, err1 := strconv.ParseFloat(m[2], 64)
		end, err2 := strconv.ParseFloat(m[3], 64)
		rate, err3 := strconv.ParseFloat(m[4], 64)
		if err1 != nil || err2 != nil || err3 != nil || end <= start {
			return nil
		}
		rate *= map[string]float64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m[5]]
		if _, seen := byID[m[1]]; !seen {
			order = append(order, m[1])
		}
		byID[m[1]] = append(byID[m[1]], Interval{Start: seconds64(start), End: seconds64(end), Bytes: uint64(math.Round(rate * (end - start) / 8))})
	}
	out := make([][]Interval, len(order))
	for i, id := range order {
		out[i] = byID[id]
	}
	return out
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
		"-P", strconv.Itoa(b.Streams), "-t", seconds(b.Duration), "-J", "--get-server-output"}
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
