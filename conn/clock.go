package conn

import (
	"sync/atomic"
	"time"
)

// clockGranularity is how stale the flow-hash clock may get. Rotation
// periods are seconds or more, so a millisecond is plenty.
const clockGranularity = time.Millisecond

// coarseClock is a wall clock read at most once per granularity, because
// time.Now costs as much as hashing a flow key. A timer, armed only while
// the clock is in use, marks the cached value stale; an idle conn has no
// timer running and the first read after a pause is exact.
type coarseClock struct {
	now     atomic.Int64 // Unix nanoseconds; 0 means stale
	stopped atomic.Bool
	timer   *time.Timer
}

func newCoarseClock() *coarseClock {
	c := &coarseClock{}
	c.timer = time.AfterFunc(time.Hour, func() { c.now.Store(0) })
	c.timer.Stop()
	return c
}

// Now returns the wall-clock time in Unix nanoseconds, at most
// clockGranularity old. It is safe for concurrent use and does not
// allocate.
func (c *coarseClock) Now() int64 {
	if t := c.now.Load(); t != 0 {
		return t
	}
	t := time.Now().UnixNano()
	if !c.stopped.Load() && c.now.CompareAndSwap(0, t) {
		c.timer.Reset(clockGranularity)
	}
	return t
}

// stop stops the timer, so no goroutine of the clock outlives the conn.
// After stop, Now reads the clock every time.
func (c *coarseClock) stop() {
	c.stopped.Store(true)
	c.timer.Stop()
	c.now.Store(0)
}
