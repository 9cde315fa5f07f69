package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
	"github.com/flowspread/flowspread/internal/netns"
)

// irttReport is the part of `irtt client -o -` output the testbed reads.
type irttReport struct {
	Config struct {
		Params struct {
			Interval int64 `json:"interval"` // nanoseconds
		} `json:"params"`
	} `json:"config"`
	RoundTrips []struct {
		Seqno      int    `json:"seqno"`
		Lost       string `json:"lost"` // "false", "true", "true_down" or "true_up"
		Timestamps struct {
			Client struct {
				Send struct {
					Wall int64 `json:"wall"` // nanoseconds since the epoch
				} `json:"send"`
			} `json:"client"`
		} `json:"timestamps"`
		Delay struct {
			RTT *int64 `json:"rtt"` // nanoseconds; absent when lost
		} `json:"delay"`
	} `json:"round_trips"`
}

// Probe is what one latency probe measured.
type Probe struct {
	RTTms []float64 // round-trip times of the answered probes, in send order
	Lost  int
	// Samples are every round trip, answered or lost, in send order,
	// with the time each was sent: what a pairwise verdict needs.
	Samples []verdict.Sample
}

var errNoRoundTrips = errors.New("irtt reported no round trips")

// parseIrtt reads the JSON output of one irtt client run.
func parseIrtt(data []byte) (Probe, error) {
	var r irttReport
	if err := json.Unmarshal(data, &r); err != nil {
		return Probe{}, fmt.Errorf("irtt JSON: %w", err)
	}
	if len(r.RoundTrips) == 0 {
		return Probe{}, errNoRoundTrips
	}
	p := Probe{RTTms: make([]float64, 0, len(r.RoundTrips)), Samples: make([]verdict.Sample, len(r.RoundTrips))}
	// irtt sends on a fixed schedule: a round trip without its send time
	// (older versions leave it out of lost ones) was sent at the first
	// one's time plus its sequence number of intervals.
	var first int64
	var firstSeq int
	for _, rt := range r.RoundTrips {
		if w := rt.Timestamps.Client.Send.Wall; w > 0 {
			first, firstSeq = w, rt.Seqno
			break
		}
	}
	for i, rt := range r.RoundTrips {
		sent := rt.Timestamps.Client.Send.Wall
		if sent <= 0 {
			sent = first + int64(rt.Seqno-firstSeq)*r.Config.Params.Interval
		}
		s := verdict.Sample{Sent: time.Unix(0, sent)}
		if rt.Lost != "false" || rt.Delay.RTT == nil {
			s.Lost = true
			p.Lost++
		} else {
			s.RTT = time.Duration(*rt.Delay.RTT)
			p.RTTms = append(p.RTTms, float64(*rt.Delay.RTT)/1e6)
		}
		p.Samples[i] = s
	}
	return p, nil
}

// Slice returns the part of p sent in [from, to).
func (p Probe) Slice(from, to time.Time) Probe {
	var s Probe
	for _, x := range p.Samples {
		if x.Sent.Before(from) || !x.Sent.Before(to) {
			continue
		}
		s.Samples = append(s.Samples, x)
		if x.Lost {
			s.Lost++
		} else {
			s.RTTms = append(s.RTTms, float64(x.RTT)/float64(time.Millisecond))
		}
	}
	return s
}

// Append returns p followed by q, as one probe.
func (p Probe) Append(q Probe) Probe {
	return Probe{
		RTTms:   append(append([]float64(nil), p.RTTms...), q.RTTms...),
		Lost:    p.Lost + q.Lost,
		Samples: append(append([]verdict.Sample(nil), p.Samples...), q.Samples...),
	}
}

// probeNice raises the probes' priority above the bulk load's, as if
// they ran on hosts of their own: a probe that waits for a CPU behind
// iperf3 measures the testbed machine, not the network.
const probeNice = "-10"

// IrttPort is the port of the irtt servers, one per probe path.
const IrttPort = 2112

// StartIrttServer starts an irtt server in ns listening on each of binds.
func StartIrttServer(ns netns.Namespace, binds ...netip.AddrPort) (*Server, error) {
	list := make([]string, len(binds))
	for i, b := range binds {
		list[i] = b.String()
	}
	// --set-src-ip: a reply leaves from the address the request came to,
	// whichever of the server's addresses that is.
	return startServer(ns, "irtt server", "ListenerStart", len(binds),
		"nice", "-n", probeNice, "irtt", "server", "-b", strings.Join(list, ","), "--set-src-ip", "-i", "1ms")
}

// RunIrtt runs an irtt client in ns sending one small probe every interval
// to server for duration.
func RunIrtt(ctx context.Context, ns netns.Namespace, server netip.AddrPort, interval, duration time.Duration) (Probe, error) {
	args := []string{"nice", "-n", probeNice, "irtt", "client", "-Q", "-o", "-", "-i", interval.String(), "-d", duration.String(), server.String()}
	out, err := runCapture(ctx, ns, args...)
	p, perr := parseIrtt(out)
	if perr != nil {
		if err != nil {
			return Probe{}, fmt.Errorf("%s: %w (%v)", strings.Join(args, " "), perr, err)
		}
		return Probe{}, fmt.Errorf("%s: %w", strings.Join(args, " "), perr)
	}
	return p, nil
}
