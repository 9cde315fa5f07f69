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
func (t *tunnel) keepalive(every time.Duration) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	first := true
	for {
		select {
		case <-t.done:
			return nil
		case <-timer.C:
		}
		quiet := time.Since(t.start) - time.Duration(t.lastSend.Load())
		if first || quiet >= every {
			if err := t.sendKeepalive(); err != nil {
				return err
			}
			first, quiet = false, 0
		}
		timer.Reset(every - quiet)
	}
}

// sendKeepalive seals an empty datagram and sends it on the canonical
// pair. The peer authenticates it, reports it to its conn (Observe) and
// drops it. A send the kernel refuses is counted, as send does; only a
// closed conn ends the keepalive, with nil.
func (t *tunnel) sendKeepalive() error {
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
		t.lastSend.Store(int64(time.Since(t.start)))
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		t.count.sendErrors.Add(1)
	}
	return nil
}
