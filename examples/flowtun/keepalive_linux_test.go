package main

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// fakeClock drives the keepalive loop through a scripted run: each sleep
// moves the time on, and the tunnel's traffic (the times it sent a
// datagram) happens as the time passes, as the TUN reader would store it
// in lastSend.
type fakeClock struct {
	t       *tunnel
	time    time.Duration
	end     time.Duration   // sleep returns false from here on
	traffic []time.Duration // when the tunnel sends, ascending
	sent    uint64          // keepalives counted at the last sleep
	alive   []time.Duration // when each keepalive went
}

func (c *fakeClock) now() time.Duration { return c.time }

func (c *fakeClock) sleep(d time.Duration) bool {
	if n := c.t.count.keepalivesSent.Load(); n != c.sent {
		c.alive = append(c.alive, c.time)
		c.sent = n
	}
	if d < 0 {
		panic(fmt.Sprintf("sleep %v", d))
	}
	c.time += d
	for len(c.traffic) > 0 && c.traffic[0] <= c.time {
		if at := int64(c.traffic[0]); at > c.t.lastSend.Load() {
			c.t.lastSend.Store(at)
		}
		c.traffic = c.traffic[1:]
	}
	return c.time < c.end
}

// TestKeepaliveTiming runs the keepalive loop on a fake clock through
// runs of silence and of traffic, and checks when keepalives went: the
// first at once; later ones only after a whole interval in which nothing
// was sent (traffic or keepalive), and never while traffic flows more
// often than the interval; and no silence ever lasts longer than the
// interval without one.
func TestKeepaliveTiming(t *testing.T) {
	const every = 25 * time.Second
	steady := func(from, to, gap time.Duration) []time.Duration {
		var s []time.Duration
		for at := from; at < to; at += gap {
			s = append(s, at)
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		traffic []time.Duration
		end     time.Duration
		want    int // keepalives
	}{
		{"silence", nil, 10*every + time.Millisecond, 11},
		{"steady traffic", steady(time.Second, 10*every, 3*time.Second), 10 * every, 1},
		{"traffic just under the interval", steady(time.Second, 10*every, every-time.Millisecond), 10 * every, 1},
		{"traffic then silence", steady(time.Second, 4*every, time.Second), 4*every + 3*every + time.Millisecond, 1 + 3},
		{"a burst in the silence", []time.Duration{every + 10*time.Second}, 4*every + time.Millisecond, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newLoopbackPair(t, uint64(time.Now().UnixNano()))
			clk := &fakeClock{t: a.tunnel, end: tc.end, traffic: slices.Clone(tc.traffic)}
			if err := a.keepalive(every, clk); err != nil {
				t.Fatal(err)
			}
			t.Logf("keepalives at %v", clk.alive)
			if len(clk.alive) == 0 || clk.alive[0] != 0 {
				t.Fatalf("the first keepalive went at %v, want at once", clk.alive)
			}
			// Every send, in order: traffic and keepalives.
			sends := slices.Sorted(slices.Values(append(slices.Clone(tc.traffic), clk.alive...)))
			for _, k := range clk.alive[1:] {
				i := slices.Index(sends, k)
				if quiet := k - sends[i-1]; quiet < every {
					t.Errorf("a keepalive at %v after %v of quiet, want %v or more", k, quiet, every)
				}
			}
			sends = append(sends, tc.end)
			for i := 1; i < len(sends); i++ {
				if gap := sends[i] - sends[i-1]; gap > every {
					t.Errorf("nothing sent from %v to %v, longer than %v", sends[i-1], sends[i], every)
				}
			}
			if len(clk.alive) != tc.want {
				t.Errorf("%d keepalives, want %d", len(clk.alive), tc.want)
			}
			if got := a.count.keepalivesSent.Load(); got != uint64(len(clk.alive)) {
				t.Errorf("counted %d keepalives sent, saw %d", got, len(clk.alive))
			}
		})
	}
}

// TestKeepaliveDue is keepaliveDue's table.
func TestKeepaliveDue(t *testing.T) {
	const every = 10 * time.Second
	for _, tc := range []struct {
		name          string
		now, lastSend time.Duration
		first         bool
		wantSend      bool
		wantWait      time.Duration
	}{
		{"first, at once", 0, 0, true, true, every},
		{"first, after traffic", 3 * time.Second, 2 * time.Second, true, true, every},
		{"a whole interval quiet", 25 * time.Second, 15 * time.Second, false, true, every},
		{"quiet longer", 40 * time.Second, 15 * time.Second, false, true, every},
		{"sent a moment ago", 25 * time.Second, 24 * time.Second, false, false, 9 * time.Second},
		{"sent just now", 25 * time.Second, 25 * time.Second, false, false, every},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send, wait := keepaliveDue(every, tc.now, tc.lastSend, tc.first)
			if send != tc.wantSend || wait != tc.wantWait {
				t.Errorf("keepaliveDue = %v, %v; want %v, %v", send, wait, tc.wantSend, tc.wantWait)
			}
		})
	}
}
