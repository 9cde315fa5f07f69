package main

import (
	"errors"
	"net"
	"time"

	"github.com/flowspread/flowspread/conn"
)

// keepalive is the persistent keepalive, as WireGuard has it: whenever
// we have sent the peer nothing for every, it sends an empty authentic
// datagram on the canonical pair (it has no flow, so the conn sends it
// unspread), so that a stateful firewall or NAT in front of either end
// keeps that pair's state, and the peer can reach us on it at any time.
// The first goes at once, to open the pair before any packet needs it.
// It returns nil once the tunnel is closed.
//
// Any datagram we send counts as traffic, as in WireGuard, also one on a
// spread pair: while every flow runs on its own pair, the canonical pair
// may go idle. That is harmless when its port is opened in the firewall
// (the setup flowtun asks for); see the package doc.
func (t *tunnel) keepalive(every time.Duration, clk keepaliveClock) error {
	wait, first := time.Duration(0), true
	for {
		if !clk.sleep(wait) {
			return nil
		}
		var send bool
		send, wait = keepaliveDue(every, clk.now(), time.Duration(t.lastSend.Load()), first)
		if !send {
			continue
		}
		if err := t.sendKeepalive(clk); err != nil {
			return err
		}
		first = false
	}
}

// keepaliveDue says whether a keepalive goes now, at now (the time since
// the tunnel started), when the last datagram to the peer went at
// lastSend, and how long to wait before asking again: every after the
// last datagram, so that one goes only after a whole interval of silence.
func keepaliveDue(every, now, lastSend time.Duration, first bool) (bool, time.Duration) {
	quiet := now - lastSend
	if first || quiet >= every {
		return true, every
	}
	return false, every - quiet
}

// keepaliveClock is the time as the keepalive sees it: the monotonic
// clock since the tunnel started (the wall clock may step), and a sleep
// that ends early, with false, once the tunnel closes. Tests drive the
// keepalive with a clock of their own.
type keepaliveClock interface {
	now() time.Duration
	sleep(d time.Duration) bool
}

// tunnelClock is the keepalive's clock in a running tunnel.
type tunnelClock struct {
	start time.Time
	done  <-chan struct{}
	timer *time.Timer
}

func newTunnelClock(t *tunnel) *tunnelClock {
	tm := time.NewTimer(time.Hour)
	tm.Stop()
	return &tunnelClock{start: t.start, done: t.done, timer: tm}
}

func (c *tunnelClock) now() time.Duration { return time.Since(c.start) }

func (c *tunnelClock) sleep(d time.Duration) bool {
	c.timer.Reset(d)
	select {
	case <-c.done:
		c.timer.Stop()
		return false
	case <-c.timer.C:
		return true
	}
}

// sendKeepalive seals an empty datagram and sends it on the canonical
// pair. The peer authenticates it, reports it to its conn (Observe) and
// drops it. A send the kernel refuses is counted, as send does; only a
// closed conn ends the keepalive, with nil.
func (t *tunnel) sendKeepalive(clk keepaliveClock) error {
	t.sealMu.Lock()
	t.seal.catchUp(t.clock())
	dgram, err := t.seal.seal(t.keepaliveBuf, 0)
	t.sealMu.Unlock()
	if err != nil {
		return err
	}
	t.keepaliveMsg[0] = conn.Message{Buf: dgram, Peer: t.cfg.peer}
	n, err := t.conn.WriteBatch(t.keepaliveMsg)
	if n == 1 {
		t.count.sent.Add(1)
		t.count.keepalivesSent.Add(1)
		t.lastSend.Store(int64(clk.now()))
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		t.count.sendErrors.Add(1)
	}
	return nil
}
