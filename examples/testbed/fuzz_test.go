package main

import (
	"os"
	"path/filepath"
	"testing"
)

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
		if err == nil && len(p.RTTms)+p.Lost == 0 {
			t.Error("no error and no round trips")
		}
		summarize(p.RTTms, p.Lost)
	})
}

func FuzzParseTcQdiscs(f *testing.F) {
	addFixtures(f, "tc-*.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		qs, err := parseTcQdiscs(data)
		if err != nil {
			return
		}
		if q, ok := leaf(qs, "va"); ok {
			var s qdiscStats
			s.add(q)
		}
	})
}
