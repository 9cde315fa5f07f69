package main

import (
	"errors"
	"math"
	"os"
	"path/filepath"
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
			if s := summarize(p.RTTms, p.Lost); float64(s.Median) > tc.medianMax {
				t.Errorf("median %v ms, want below %v", s.Median, tc.medianMax)
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
