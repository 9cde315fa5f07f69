package report

import (
	"bytes"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	files, err := sampleReport().WriteOutputs(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("wrote %q, want results.json and two plots", files)
	}
	for _, name := range []string{"latency-cdf.png", "throughput.png"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
			t.Errorf("%s is only %v", name, b)
		}
	}
}

func TestPlotsNeedData(t *testing.T) {
	rep := &Report{Modes: []ModeResult{{Mode: "one-flow", Status: StatusSkipped}}}
	dir := t.TempDir()
	if err := plotLatencyCDF(rep, filepath.Join(dir, "a.png")); !errors.Is(err, errNothingToPlot) {
		t.Errorf("latency plot of nothing: %v", err)
	}
	if err := plotThroughput(rep, filepath.Join(dir, "b.png")); !errors.Is(err, errNothingToPlot) {
		t.Errorf("throughput plot of nothing: %v", err)
	}
}

func TestCDFPoints(t *testing.T) {
	pts := cdfPoints([]float64{3, 0, 1, 2})
	want := []struct{ x, y float64 }{{0.001, 0.25}, {1, 0.5}, {2, 0.75}, {3, 1}}
	for i, w := range want {
		if pts[i].X != w.x || pts[i].Y != w.y {
			t.Errorf("point %d = (%v, %v), want (%v, %v)", i, pts[i].X, pts[i].Y, w.x, w.y)
		}
	}
}
