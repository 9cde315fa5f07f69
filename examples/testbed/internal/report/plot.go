package report

import (
	"errors"
	"fmt"
	"image/color"
	"slices"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var errNothingToPlot = errors.New("no mode has measurements to plot")

// plotLatencyCDF draws the distribution of the probes' round-trip times:
// one line per mode and probe, solid inside the tunnel, dashed outside, on
// a logarithmic time axis (a FIFO's delays are hundreds of times a flow
// queue's).
func plotLatencyCDF(rep *Report, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency probe round-trip times, %s at %g Mbit/s", rep.Config.Qdisc, rep.Config.RateMbit)
	p.X.Label.Text = "round-trip time (ms)"
	p.Y.Label.Text = "fraction of probes"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.YOffs = vg.Points(40)
	p.Add(plotter.NewGrid())
	lines := 0
	for i, r := range rep.Modes {
		for _, probe := range []struct {
			name string
			s    ProbeSummary
			dash []vg.Length
		}{
			{"inner", r.InnerProbe, nil},
			{"outer", r.OuterProbe, []vg.Length{vg.Points(6), vg.Points(3)}},
		} {
			if len(probe.s.RTTms) == 0 {
				continue
			}
			l, err := plotter.NewLine(cdfPoints(probe.s.RTTms))
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Width = vg.Points(1.5)
			l.Dashes = probe.dash
			p.Add(l)
			p.Legend.Add(r.Mode+" "+probe.name, l)
			lines++
		}
	}
	if lines == 0 {
		return errNothingToPlot
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// cdfPoints returns the empirical distribution of samples as a step-free
// line: the i-th smallest sample at height (i+1)/n. Samples are clamped
// to 1 µs so that a logarithmic axis can show them.
func cdfPoints(samples []float64) plotter.XYs {
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	pts := make(plotter.XYs, len(sorted))
	for i, v := range sorted {
		pts[i].X = max(v, 0.001)
		pts[i].Y = float64(i+1) / float64(len(sorted))
	}
	return pts
}

// addFlowBars draws one mode's flows from x0 on: the inner ones (the
// tunnel's) in one color, then the outer ones in another; legend adds
// the colors to the legend.
func addFlowBars(p *plot.Plot, flows []load.Flow, x0 float64, legend bool) error {
	var in, out plotter.Values
	for _, f := range flows {
		if f.Path == "inner" {
			in = append(in, f.GoodputMbit)
		} else {
			out = append(out, f.GoodputMbit)
		}
	}
	for _, b := range []struct {
		v     plotter.Values
		xmin  float64
		color color.Color
		label string
	}{{in, x0, plotutil.Color(0), "inside the tunnel"}, {out, x0 + float64(len(in)), plotutil.Color(1), "outside"}} {
		if len(b.v) == 0 {
			continue
		}
		bars, err := plotter.NewBarChart(b.v, vg.Points(14))
		if err != nil {
			return err
		}
		bars.XMin = b.xmin
		bars.Color = b.color
		bars.LineStyle.Width = 0
		p.Add(bars)
		if legend {
			p.Legend.Add(b.label, bars)
		}
	}
	return nil
}

// plotThroughput draws every bulk flow's goodput, grouped by mode: inner
// flows (the tunnel's) in one color, outer ones in another, with the
// equal share of the bottleneck as a line.
func plotThroughput(rep *Report, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Goodput per bulk flow, %s at %g Mbit/s", rep.Config.Qdisc, rep.Config.RateMbit)
	p.Y.Label.Text = "goodput (Mbit/s)"
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	flows := rep.Config.InnerFlows + rep.Config.OuterFlows
	group := float64(flows + 1) // one empty slot between modes
	var ticks []plot.Tick
	drawn := 0
	top := rep.Config.RateMbit / float64(max(flows, 1))
	for _, r := range rep.Modes {
		if len(r.Flows) == 0 {
			continue
		}
		for _, f := range r.Flows {
			top = max(top, f.GoodputMbit)
		}
		x0 := float64(drawn) * group
		if err := addFlowBars(p, r.Flows, x0, drawn == 0); err != nil {
			return err
		}
		ticks = append(ticks, plot.Tick{Value: x0 + float64(len(r.Flows)-1)/2, Label: r.Mode})
		drawn++
	}
	if drawn == 0 {
		return errNothingToPlot
	}
	if flows > 0 {
		fair := plotter.NewFunction(func(float64) float64 { return rep.Config.RateMbit / float64(flows) })
		fair.Color = color.Gray{Y: 80}
		fair.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
		fair.XMin, fair.XMax = -1, float64(drawn)*group-1
		p.Add(fair)
		p.Legend.Add("equal share of the bottleneck rate", fair)
	}
	p.X.Min, p.X.Max = -1, float64(drawn)*group-1
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Tick.LineStyle = draw.LineStyle{}
	p.Legend.Top = true
	p.Y.Max = top * 1.4 // room for the legend above the bars
	width := vg.Length(max(6, 1.2+0.35*float64(drawn)*group)) * vg.Inch
	return p.Save(width, 4.5*vg.Inch, path)
}
