package report

import (
	"encoding/json"
	"math"
	"testing"
)

func TestJain(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want float64
	}{
		{"equal shares", []float64{2.5, 2.5, 2.5, 2.5}, 1},
		{"one flow takes all of four", []float64{10, 0, 0, 0}, 0.25},
		{"single flow", []float64{3}, 1},
		// The control's shape: 4 flows squeezed into one share beside 4.
		{"tunnel squeezed", []float64{1, 1, 1, 1, 3.6, 3.6, 3.6, 3.6}, (4 + 14.4) * (4 + 14.4) / (8 * (4 + 4*3.6*3.6))},
		{"no flows", nil, 0},
		{"all zero", []float64{0, 0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := jain(tc.xs); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("jain(%v) = %v, want %v", tc.xs, got, tc.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	sorted := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		name string
		data []float64
		p    float64
		want float64
	}{
		{"median of even count interpolates", sorted, 50, 5.5},
		{"p0 is the minimum", sorted, 0, 1},
		{"p100 is the maximum", sorted, 100, 10},
		{"p90", sorted, 90, 9.1},
		{"p99", sorted, 99, 9.91},
		{"one sample", []float64{4}, 99, 4},
		{"two samples", []float64{1, 3}, 50, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.data, tc.p); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.data, tc.p, got, tc.want)
			}
		})
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("percentile of nothing = %v, want NaN", got)
	}
}

func TestSummarize(t *testing.T) {
	rtts := []float64{5, 1, 4, 2, 3} // unsorted on purpose
	s := summarize(rtts, 5)
	if s.Samples != 5 || s.Lost != 5 || s.LossPercent != 50 {
		t.Errorf("counts = %d samples, %d lost, %v%%; want 5, 5, 50%%", s.Samples, s.Lost, s.LossPercent)
	}
	if s.Min != 1 || s.Median != 3 || s.Max != 5 {
		t.Errorf("min/median/max = %v/%v/%v, want 1/3/5", s.Min, s.Median, s.Max)
	}
	if rtts[0] != 5 {
		t.Error("summarize sorted its caller's slice")
	}

	empty := summarize(nil, 3)
	if empty.LossPercent != 100 || !math.IsNaN(float64(empty.P99)) {
		t.Errorf("no replies: loss %v%%, p99 %v; want 100%% and NaN", empty.LossPercent, empty.P99)
	}
}

func TestNumberJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    number
		want string
	}{
		{"value", 1.5, "1.5"},
		{"missing is null", number(math.NaN()), "null"},
		{"infinite is null", number(math.Inf(1)), "null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.n)
			if err != nil || string(b) != tc.want {
				t.Fatalf("Marshal(%v) = %s, %v; want %s", tc.n, b, err, tc.want)
			}
			var back number
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if math.IsNaN(float64(tc.n)) || math.IsInf(float64(tc.n), 0) {
				if !math.IsNaN(float64(back)) {
					t.Errorf("null read back as %v, want NaN", back)
				}
			} else if back != tc.n {
				t.Errorf("read back %v, want %v", back, tc.n)
			}
		})
	}
}
