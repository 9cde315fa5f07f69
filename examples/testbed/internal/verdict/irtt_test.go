package verdict

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// readIrtt reads the samples of an `irtt client -o -` report: the client's
// send time (wall clock, which irtt gives lost round trips too), the round
// trip, and whether it was lost. testdata/irtt-fq_codel-loaded.json is a
// copy of the testbed's: one probe under load, in a VM on a 2-CPU host,
// 126 round trips at 10 ms.
func readIrtt(t *testing.T, name string) []Sample {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		RoundTrips []struct {
			Lost       string `json:"lost"`
			Timestamps struct {
				Client struct {
					Send struct {
						Wall int64 `json:"wall"`
					} `json:"send"`
				} `json:"client"`
			} `json:"timestamps"`
			Delay struct {
				RTT *int64 `json:"rtt"`
			} `json:"delay"`
		} `json:"round_trips"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	samples := make([]Sample, len(rep.RoundTrips))
	for k, rt := range rep.RoundTrips {
		samples[k] = Sample{Sent: time.Unix(0, rt.Timestamps.Client.Send.Wall), Lost: rt.Lost != "false" || rt.Delay.RTT == nil}
		if !samples[k].Lost {
			samples[k].RTT = time.Duration(*rt.Delay.RTT)
		}
	}
	return samples
}

// TestJudgeRealTrace uses a real irtt trace from a busy host (sends 10 to
// 24 ms apart instead of 10, one 190 ms gap, round trips up to 209 ms) as
// the outer probe, and a second probe on the same host derived from it: sent
// 2.7 ms later, so that it stalled with it, and paying what the test case
// says.
func TestJudgeRealTrace(t *testing.T) {
	outer := readIrtt(t, "testdata/irtt-fq_codel-loaded.json")
	if len(outer) != 126 || outer[0].Sent.IsZero() {
		t.Fatalf("%d samples, first sent %v: the trace changed", len(outer), outer[0].Sent)
	}
	derive := func(extra func(k int, rng *rand.Rand) (time.Duration, bool)) []Sample {
		rng := rand.New(rand.NewPCG(1, 16))
		inner := make([]Sample, len(outer))
		for k, s := range outer {
			add, lost := extra(k, rng)
			inner[k] = Sample{Sent: s.Sent.Add(2700 * time.Microsecond), RTT: s.RTT + add, Lost: s.Lost || lost}
		}
		return inner
	}
	tests := []struct {
		name  string
		extra func(k int, rng *rand.Rand) (time.Duration, bool)
		want  Status
		// reason, if set, must appear in the round's reasons.
		reason string
	}{
		{
			// The tunnel costs 0.3 ms; the host's stalls hit both.
			name:  "spread",
			extra: func(int, *rand.Rand) (time.Duration, bool) { return 300 * time.Microsecond, false },
			want:  Met,
		},
		{
			// The tunnel's bulk queue: on this host, whose outer probe
			// itself waits 40 ms at p99, not a verdict.
			name: "one-flow",
			extra: func(_ int, rng *rand.Rand) (time.Duration, bool) {
				return uniform(rng, [2]time.Duration{20 * time.Millisecond, 152 * time.Millisecond}), rng.Float64() < 0.25
			},
			want:   Inconclusive,
			reason: "the outer probe itself waited",
		},
	}
	// The trace is one short round: judge a p90 so that its 126 samples
	// are enough.
	tg := targets
	tg.Quantile = 0.9
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Judge([]Round{{Inner: derive(tt.extra), Outer: outer}}, tg)
			rr := res.Rounds[0]
			t.Logf("%v: %d instants, %d stalled, offset %v, GapQ %v, outer p99 %v; %s",
				rr.Status, rr.Instants, rr.Stalled, rr.Offset, rr.GapQ, rr.Outer.P99, strings.Join(rr.Reasons, "; "))
			if rr.Status != tt.want {
				t.Errorf("%v, want %v", rr.Status, tt.want)
			}
			if rr.Instants != len(outer) {
				t.Errorf("%d instants, want all %d", rr.Instants, len(outer))
			}
			if d := rr.Offset + 2700*time.Microsecond; d < -500*time.Microsecond || d > 500*time.Microsecond {
				t.Errorf("offset %v, want about -2.7ms (the outer probe leaves first)", rr.Offset)
			}
			if tt.reason != "" && !strings.Contains(strings.Join(rr.Reasons, "\n"), tt.reason) {
				t.Errorf("reasons %q, want one containing %q", rr.Reasons, tt.reason)
			}
		})
	}
}
