package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
)

// measured is what one mode's idle probes and load measured.
type measured struct {
	idleInner, idleOuter load.Probe // before the load; empty without -idle
	flows                []load.Flow
	// inner and outer are the probes of each round, sent at the same
	// instants.
	inner, outer []load.Probe
	wireBefore   []network.WireStats
}

// whole returns each probe over all rounds.
func (m *measured) whole() (inner, outer load.Probe) {
	for i := range m.inner {
		inner, outer = inner.Append(m.inner[i]), outer.Append(m.outer[i])
	}
	return inner, outer
}

// rounds cuts the mode into its rounds for the report: each round's
// window of the bulk flows' measured time, its probes, and the slice of
// the idle probes that falls to it.
func (m *measured) rounds(cfg *config) []report.Round {
	var idleStart, idleEnd time.Time
	if s := m.idleInner.Samples; len(s) > 0 {
		idleStart, idleEnd = s[0].Sent, s[len(s)-1].Sent.Add(time.Nanosecond)
	}
	idleStep := idleEnd.Sub(idleStart) / time.Duration(max(len(m.inner), 1))
	step := roundLength(cfg)
	rounds := make([]report.Round, len(m.inner))
	for i := range rounds {
		r := &rounds[i]
		r.From, r.To = time.Duration(i)*step, time.Duration(i+1)*step
		if i == len(rounds)-1 {
			r.To = cfg.Duration // the last second, after the probes, counts too
		}
		r.Probes = verdict.Round{Inner: m.inner[i].Samples, Outer: m.outer[i].Samples}
		if idleStep > 0 {
			from, to := idleStart.Add(time.Duration(i)*idleStep), idleStart.Add(time.Duration(i+1)*idleStep)
			r.Probes.IdleInner, r.Probes.IdleOuter = m.idleInner.Slice(from, to).Samples, m.idleOuter.Slice(from, to).Samples
		}
	}
	return rounds
}

// roundLength is the length of one round: the probes run from the end of
// the warm-up to a second before the bulk flows stop, cut into
// cfg.Rounds.
func roundLength(cfg *config) time.Duration {
	return max(cfg.Duration-time.Second, time.Second) / time.Duration(cfg.Rounds)
}

// measure probes both paths idle, then runs the load with its rounds of
// probes, and samples the router's qdiscs meanwhile.
func (e *experiment) measure(ctx context.Context, inner tunnel.InnerPath, res *report.ModeResult) (*measured, error) {
	got := &measured{}
	innerServer := netip.AddrPortFrom(inner.Server, irttInnerPort)
	if e.cfg.Idle > 0 {
		e.progress("  idle: both probes for %v, with no load", e.cfg.Idle)
		var err error
		if got.idleInner, got.idleOuter, err = e.probeBoth(ctx, innerServer, e.cfg.Idle); err != nil {
			return nil, fmt.Errorf("with no load: %w", err)
		}
		in, out := report.NewProbeSummary(got.idleInner), report.NewProbeSummary(got.idleOuter)
		res.InnerIdle, res.OuterIdle = &in, &out
	}
	var err error
	if got.wireBefore, err = e.topo.WireStats(); err != nil {
		return nil, err
	}
	e.progress("  load: %d bulk flows inside, %d outside, 2 probes, %v warm-up + %v measured in %d rounds",
		e.cfg.InnerFlows, e.cfg.OuterFlows, e.cfg.Omit, e.cfg.Duration, e.cfg.Rounds)
	q := &qdiscSampler{router: e.topo.Router,
		fwd: &shaping.Stats{Device: network.RouterServerIf}, rev: &shaping.Stats{Device: network.RouterClientIf}}
	res.Qdisc, res.ReverseQdisc = q.fwd, q.rev
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		q.loop(done, e.cfg.Omit, func(elapsed time.Duration) {
			e.progress("  load running for %d s: the bottleneck has %d flows queued", int(elapsed/time.Second), q.fwd.LastFlows())
		})
	}()
	err = e.runLoad(ctx, inner, got)
	close(done)
	<-sampled
	if err != nil {
		return nil, err
	}
	e.progress("  load done")
	q.sample() // the final counters, after the last packet
	return got, nil
}

// runLoad runs the bulk flows of both paths and, from the end of the
// warm-up, the rounds of probes; the first failure stops the rest.
func (e *experiment) runLoad(ctx context.Context, inner tunnel.InnerPath, got *measured) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		errs       []error
		innerFlows []load.Flow
		outerFlows []load.Flow
	)
	record := func(what string, err error) {
		mu.Lock()
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
		mu.Unlock()
		cancel()
	}
	bulk := func(server netip.Addr, port, streams int, path string, into *[]load.Flow) {
		f, err := load.RunIperf3(ctx, e.topo.Client, load.Bulk{Server: server, Port: port, Streams: streams,
			Duration: e.cfg.Duration, Omit: e.cfg.Omit, Path: path})
		if err != nil {
			record("bulk flows "+path, err)
		}
		*into = f
	}
	wg.Go(func() { bulk(inner.Server, iperf3InnerPort, e.cfg.InnerFlows, "inner", &innerFlows) })
	if e.cfg.OuterFlows > 0 {
		wg.Go(func() { bulk(e.topo.ServerHost, iperf3OuterPort, e.cfg.OuterFlows, "outer", &outerFlows) })
	}
	wg.Go(func() {
		if err := e.probeRounds(ctx, netip.AddrPortFrom(inner.Server, irttInnerPort), got); err != nil {
			record("probes", err)
		}
	})
	wg.Wait()
	got.flows = append(innerFlows, outerFlows...)
	return errors.Join(errs...)
}

// probeRounds runs both probes at once in each round: the probes measure
// the loaded queue, from the end of the warm-up to a second before the
// bulk flows stop. Each round is a fresh irtt run, so a probe that
// happened to share a queue with a bulk flow does so for one round only.
func (e *experiment) probeRounds(ctx context.Context, innerServer netip.AddrPort, got *measured) error {
	begin := time.Now().Add(e.cfg.Omit)
	step := roundLength(e.cfg)
	// Room between rounds for irtt to finish and start again.
	length := step - min(300*time.Millisecond, step/10)
	for i := range e.cfg.Rounds {
		select {
		case <-time.After(time.Until(begin.Add(time.Duration(i) * step))):
		case <-ctx.Done():
			return nil // a bulk flow failed: its error says why
		}
		in, out, err := e.probeBoth(ctx, innerServer, length)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		got.inner, got.outer = append(got.inner, in), append(got.outer, out)
	}
	return nil
}

// probeBoth runs the inner probe (to innerServer) and the outer probe at
// once for d.
func (e *experiment) probeBoth(ctx context.Context, innerServer netip.AddrPort, d time.Duration) (inner, outer load.Probe, err error) {
	var wg sync.WaitGroup
	var inErr, outErr error
	interval := e.cfg.ProbeInterval
	wg.Go(func() { inner, inErr = load.RunIrtt(ctx, e.topo.Client, innerServer, interval, d) })
	wg.Go(func() {
		outer, outErr = load.RunIrtt(ctx, e.topo.Client, netip.AddrPortFrom(e.topo.ServerHost, irttOuterPort), interval, d)
	})
	wg.Wait()
	if inErr != nil {
		return inner, outer, fmt.Errorf("inner probe: %w", inErr)
	}
	if outErr != nil {
		return inner, outer, fmt.Errorf("outer probe: %w", outErr)
	}
	return inner, outer, nil
}

// qdiscSampler samples the router's qdiscs while the load runs: their
// flow counts exist only while packets are queued.
type qdiscSampler struct {
	router   shaping.Runner
	fwd, rev *shaping.Stats
}

func (q *qdiscSampler) sample() {
	qs, err := shaping.Sample(q.router)
	if err != nil {
		return
	}
	if s, ok := shaping.Leaf(qs, network.RouterServerIf); ok {
		q.fwd.Add(s)
	}
	if s, ok := shaping.Leaf(qs, network.RouterClientIf); ok {
		q.rev.Add(s)
	}
}

// loop samples every qdiscSampleInterval after the warm-up until done,
// telling progress how long the load has run.
func (q *qdiscSampler) loop(done <-chan struct{}, warmup time.Duration, progress func(time.Duration)) {
	tick := time.NewTicker(qdiscSampleInterval)
	defer tick.Stop()
	begin := time.Now()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if elapsed := time.Since(begin); elapsed >= warmup {
			q.sample()
			progress(elapsed)
		}
	}
}
