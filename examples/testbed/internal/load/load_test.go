package load

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseIperf3(t *testing.T) {
	for _, tc := range []struct {
		name        string
		file        string
		wantMbit    []float64 // receiver goodput per stream, rounded to 0.001
		wantRetrans int       // of the first stream
	}{
		// 4 streams through HTB 20 Mbit/s + fq_codel in the VM.
		{"shaped by fq_codel", "iperf3-P4-fq_codel.json", []float64{4.695, 4.453, 4.410, 4.367}, -1},
		// 2 streams on loopback, with -O 1.
		{"loopback", "iperf3-loopback-P2.json", []float64{3779.912, 3796.465}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flows, err := parseIperf3(fixture(t, tc.file), "outer", "outer")
			if err != nil {
				t.Fatal(err)
			}
			if len(flows) != len(tc.wantMbit) {
				t.Fatalf("got %d flows, want %d", len(flows), len(tc.wantMbit))
			}
			for i, f := range flows {
				if math.Abs(f.GoodputMbit-tc.wantMbit[i]) > 0.0005 {
					t.Errorf("flow %d goodput %.4f Mbit/s, want %.3f", i, f.GoodputMbit, tc.wantMbit[i])
				}
				if f.Path != "outer" || f.Name != "outer-"+string(rune('1'+i)) {
					t.Errorf("flow %d is %q on path %q", i, f.Name, f.Path)
				}
			}
			if tc.wantRetrans >= 0 && flows[0].Retransmits != tc.wantRetrans {
				t.Errorf("retransmits %d, want %d", flows[0].Retransmits, tc.wantRetrans)
			}
		})
	}
}

func TestParseIperf3Errors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    []byte
		want    error
		wantMsg string
	}{
		{"refused connection", fixture(t, "iperf3-refused.json"), nil, "Connection refused"},
		{"not JSON", []byte("iperf3: error - unable to connect"), nil, "iperf3 JSON"},
		{"no streams", []byte(`{"start":{},"end":{"streams":[]}}`), errNoStreams, ""},
		{"empty output", nil, nil, "iperf3 JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIperf3(tc.data, "inner", "inner")
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not say %q", err, tc.wantMsg)
			}
		})
	}
}

func TestParseIrtt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		file      string
		samples   int
		lost      int
		minMs     float64 // every RTT at least this
		medianMax float64 // median below this
	}{
		// Probe beside 4 bulk flows through fq_codel, in the VM.
		{"under load", "irtt-fq_codel-loaded.json", 126, 0, 0.01, 50},
		// Loopback with 4 requests lost upstream ("true_up").
		{"loopback with losses", "irtt-loopback.json", 180, 4, 0.01, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseIrtt(fixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(p.RTTms) != tc.samples || p.Lost != tc.lost {
				t.Fatalf("got %d samples and %d lost, want %d and %d", len(p.RTTms), p.Lost, tc.samples, tc.lost)
			}
			for _, v := range p.RTTms {
				if v < tc.minMs || v > 10000 {
					t.Fatalf("implausible RTT %v ms", v)
				}
			}
			sorted := slices.Sorted(slices.Values(p.RTTms))
			if median := sorted[len(sorted)/2]; median > tc.medianMax {
				t.Errorf("median %v ms, want below %v", median, tc.medianMax)
			}
		})
	}
}

func TestParseIrttErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want error
	}{
		{"no round trips", `{"round_trips":[]}`, errNoRoundTrips},
		{"missing list", `{"stats":{}}`, errNoRoundTrips},
		{"not JSON", `irtt: no route to host`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseIrtt([]byte(tc.data))
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{20 * time.Second, "20"},
		{1500 * time.Millisecond, "2"},
		{100 * time.Millisecond, "1"},
	} {
		if got := seconds(tc.d); got != tc.want {
			t.Errorf("seconds(%v) = %s, want %s", tc.d, got, tc.want)
		}
	}
}

// TestParseIrttSendTimes: every round trip, lost or not, keeps its send
// time and its place, so that the two probes can be paired instant by
// instant.
func TestParseIrttSendTimes(t *testing.T) {
	p, err := parseIrtt(fixture(t, "irtt-loopback.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Samples) != 184 {
		t.Fatalf("%d samples, want 184 (180 answered, 4 lost)", len(p.Samples))
	}
	lost := 0
	for i, s := range p.Samples {
		if i > 0 && !s.Sent.After(p.Samples[i-1].Sent) {
			t.Fatalf("sample %d sent at %v, not after sample %d at %v", i, s.Sent, i-1, p.Samples[i-1].Sent)
		}
		if s.Lost {
			lost++
			if i < 94 || i > 97 {
				t.Errorf("sample %d lost; the fixture loses 94 to 97", i)
			}
		} else if s.RTT <= 0 {
			t.Errorf("sample %d answered with RTT %v", i, s.RTT)
		}
	}
	if lost != 4 {
		t.Errorf("%d lost, want 4", lost)
	}
	// The fixture's first send: 1795593080014268358 ns since the epoch.
	if got := p.Samples[0].Sent.UnixNano(); got != 1795593080014268358 {
		t.Errorf("first send %d, want 1795593080014268358", got)
	}
	if got := p.Samples[0].RTT; got != 5037082*time.Nanosecond {
		t.Errorf("first RTT %v, want 5.037082ms", got)
	}
}

// TestParseIrttInfersMissingSendTimes: a round trip without its send time
// is placed on irtt's fixed schedule.
func TestParseIrttInfersMissingSendTimes(t *testing.T) {
	data := `{"config":{"params":{"interval":10000000}},"round_trips":[
		{"seqno":0,"lost":"false","timestamps":{"client":{"send":{"wall":1000000000}}},"delay":{"rtt":2000000}},
		{"seqno":1,"lost":"true","timestamps":{"client":{}},"delay":{}},
		{"seqno":2,"lost":"false","timestamps":{"client":{"send":{"wall":1020000500}}},"delay":{"rtt":3000000}}]}`
	p, err := parseIrtt([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Samples[1].Sent.UnixNano(); got != 1010000000 || !p.Samples[1].Lost {
		t.Errorf("the lost round trip: sent %d, lost %v; want 1010000000, true", got, p.Samples[1].Lost)
	}
}

func TestProbeSliceAndAppend(t *testing.T) {
	p, err := parseIrtt(fixture(t, "irtt-loopback.json"))
	if err != nil {
		t.Fatal(err)
	}
	mid := p.Samples[100].Sent
	a, b := p.Slice(p.Samples[0].Sent, mid), p.Slice(mid, mid.Add(time.Hour))
	if len(a.Samples) != 100 || len(b.Samples) != 84 || a.Lost != 4 || b.Lost != 0 {
		t.Fatalf("slices of %d (%d lost) and %d (%d lost); want 100 (4) and 84 (0)", len(a.Samples), a.Lost, len(b.Samples), b.Lost)
	}
	if len(a.RTTms)+a.Lost != len(a.Samples) {
		t.Errorf("slice: %d RTTs + %d lost != %d samples", len(a.RTTms), a.Lost, len(a.Samples))
	}
	whole := a.Append(b)
	if !slices.Equal(whole.RTTms, p.RTTms) || whole.Lost != p.Lost || len(whole.Samples) != len(p.Samples) {
		t.Error("the two slices appended are not the probe")
	}
}

// TestIperf3Intervals: the measured intervals of each stream are kept,
// the warm-up's left out, so that a round's goodput can be cut from them.
func TestIperf3Intervals(t *testing.T) {
	flows, err := parseIperf3(fixture(t, "iperf3-P4-fq_codel.json"), "inner", "inner")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if len(f.Intervals) != 4 {
			t.Fatalf("%s: %d intervals, want 4 (the fixture measures 4 s after a 1 s warm-up)", f.Name, len(f.Intervals))
		}
		whole := f.GoodputBetween(0, time.Minute)
		// The sender's view over the whole run is within a few percent
		// of the receiver's goodput.
		if math.Abs(whole-f.GoodputMbit) > 0.1*f.GoodputMbit {
			t.Errorf("%s: %.3f Mbit/s from the intervals, %.3f at the receiver", f.Name, whole, f.GoodputMbit)
		}
		first, rest := f.GoodputBetween(0, time.Second), f.GoodputBetween(time.Second, time.Minute)
		if first <= 0 || rest <= 0 {
			t.Errorf("%s: rounds of %.3f and %.3f Mbit/s", f.Name, first, rest)
		}
	}
	if got := (Flow{}).GoodputBetween(0, time.Second); got != 0 {
		t.Errorf("a flow with no intervals: %v Mbit/s, want 0", got)
	}
}

// The parsers read other programs' output, which a failed or changed tool
// can garble: they must return an error, never panic.

func addFixtures(f *testing.F, pattern string) {
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
}

func FuzzParseIperf3(f *testing.F) {
	addFixtures(f, "iperf3-*.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		flows, err := parseIperf3(data, "inner", "inner")
		if err == nil && len(flows) == 0 {
			t.Error("no error and no flows")
		}
	})
}

func FuzzParseIrtt(f *testing.F) {
	addFixtures(f, "irtt-*.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseIrtt(data)
		if err == nil && len(p.Samples) == 0 {
			t.Error("no error and no round trips")
		}
		if err == nil && len(p.Samples) != len(p.RTTms)+p.Lost {
			t.Errorf("%d samples, %d answered + %d lost", len(p.Samples), len(p.RTTms), p.Lost)
		}
	})
}

// TestIperf3ServerIntervals: with the server's report (--get-server-output)
// the rounds are cut from what the receiver got, not from what the sender
// handed its socket, which over a short round includes what waits in
// socket buffers.
func TestIperf3ServerIntervals(t *testing.T) {
	// 2 streams at 50 Mbit/s each on loopback, with -O 1 (iperf 3.12).
	flows, err := parseIperf3(fixture(t, "iperf3-loopback-P2-server-output.json"), "inner", "inner")
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{50.3, 50.3, 49.3} // the server's lines, after the warm-up
	for _, f := range flows {
		if len(f.Intervals) != len(want) {
			t.Fatalf("%s: %d intervals, want %d", f.Name, len(f.Intervals), len(want))
		}
		for i, w := range want {
			got := f.GoodputBetween(time.Duration(i)*time.Second, time.Duration(i+1)*time.Second)
			if math.Abs(got-w) > 0.01 {
				t.Errorf("%s: second %d at %.3f Mbit/s, want %.1f (the receiver's)", f.Name, i, got, w)
			}
		}
	}
}

func TestParseServerIntervals(t *testing.T) {
	text := "[  5] local ::1 port 5299 connected to ::1 port 49858\n" +
		"[  5]   0.00-1.00   sec  6.00 MBytes  50.3 Mbits/sec                  (omitted)\n" +
		"[  7]   0.00-1.00   sec   500 KBytes  4.10 Mbits/sec\n" +
		"[  5]   0.00-1.00   sec   250 KBytes  2.05 Mbits/sec\n" +
		"[SUM]   0.00-1.00   sec   750 KBytes  6.15 Mbits/sec\n" +
		"[  5]   0.00-3.00   sec  17.9 MBytes  49.9 Mbits/sec                  receiver\n"
	got := parseServerIntervals(text)
	if len(got) != 2 || len(got[0]) != 1 || len(got[1]) != 1 {
		t.Fatalf("intervals %+v, want one for each of 2 streams", got)
	}
	// Streams in the order they first appear: 7, then 5.
	if got[0][0].Bytes != 4_100_000/8 || got[1][0].Bytes != 2_050_000/8 {
		t.Errorf("bytes %d and %d, want %d and %d", got[0][0].Bytes, got[1][0].Bytes, 4_100_000/8, 2_050_000/8)
	}
	if got := parseServerIntervals("iperf3: error - the server is busy"); len(got) != 0 {
		t.Errorf("garbage gave %+v", got)
	}
}
