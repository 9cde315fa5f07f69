package conn

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// hangAfter bounds a read that must return: a hang detector, not a speed
// check.
const hangAfter = 2 * time.Second

// listenRaw opens a conn with the Raw backend on topo's vb, with one peer
// that is nobody in the topology, so everything a test sends is foreign.
func listenRaw(t *testing.T, topo *rawTopology) *FlowSpreadConn {
	t.Helper()
	var c *FlowSpreadConn
	cfg := Config{
		Range: Range{Prefix: topo.prefix}, Port: testPort, Receive: Raw{Interface: "vb"},
		Peers: []Peer{{Addr: netip.MustParseAddrPort("[2001:db8:9::1]:51820")}},
	}
	if err := topo.b.Do(func() (err error) { c, err = Listen(cfg); return err }); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readUntilTimeout runs one ReadBatch in a goroutine and returns a channel
// that gets its error.
func readUntilTimeout(c *FlowSpreadConn) <-chan error {
	errc := make(chan error, 1)
	go func() {
		msgs := []Message{{Buf: make([]byte, 2048)}}
		for {
			n, err := c.ReadBatch(msgs)
			if n == 0 || err != nil {
				errc <- err
				return
			}
		}
	}()
	return errc
}

// expectTimeout waits for the read behind errc to fail with the deadline.
func expectTimeout(t *testing.T, errc <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: read returned %v, want a deadline error", what, err)
		}
	case <-time.After(hangAfter):
		t.Fatalf("%s: read still blocked %v after SetReadDeadline(now): the deadline was lost", what, hangAfter)
	}
}

// stallRestore is the Raw listener with a hook in the one place a reader
// restores the caller's deadline (the zero time, in these tests) after
// the host pump woke it, to run a concurrent SetReadDeadline there.
type stallRestore struct {
	receiver
	armed  atomic.Bool
	during func()
}

func (s *stallRestore) setReadDeadline(t time.Time) error {
	if t.IsZero() && s.armed.CompareAndSwap(true, false) {
		s.during()
	}
	return s.receiver.setReadDeadline(t)
}

// TestReadDeadlineNotLostToRestore lands SetReadDeadline(now) exactly
// between a woken reader's load of the caller's deadline and its setting
// of it on the listener: the cancel must still end the read.
func TestReadDeadlineNotLostToRestore(t *testing.T) {
	topo := newRawTopology(t)
	c := listenRaw(t, topo)
	hook := &stallRestore{receiver: c.recv}
	c.recv = hook // before any read or kick, so no goroutine sees the old one
	hook.during = func() {
		done := make(chan struct{})
		go func() {
			c.SetReadDeadline(time.Now())
			close(done)
		}()
		// With the fix the cancel waits for the restore to finish; do not
		// wait for it forever.
		select {
		case <-done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	hook.armed.Store(true)

	errc := readUntilTimeout(c)
	time.Sleep(50 * time.Millisecond) // let the reader block
	c.wakeReaders()                   // as the host pump does
	expectTimeout(t, errc, "cancel during restore")
	if hook.armed.Load() {
		t.Fatal("the reader never restored its deadline: the test did not hit the window")
	}
}

// TestReadDeadlineCancelRace cancels blocked reads with
// SetReadDeadline(now) while the host pump wakes the reader, over and
// over (run it with -race): every read must end with the deadline. The
// window it aims at is a few instructions wide, so it rarely hits it by
// chance; TestReadDeadlineNotLostToRestore hits it every time.
func TestReadDeadlineCancelRace(t *testing.T) {
	topo := newRawTopology(t)
	c := listenRaw(t, topo)
	// A stranger writing to b's own address: the host pump queues it and
	// wakes the reader, which drops it and waits again.
	kick := dialUDP(t, topo.a, netip.AddrPortFrom(topo.aAddr, 0), netip.MustParseAddrPort("[2001:db8:1::2]:51820"))
	iterations := 500
	if testing.Short() {
		iterations = 50
	}
	for i := range iterations {
		c.SetReadDeadline(time.Time{})
		errc := readUntilTimeout(c)
		kick.Write([]byte("wake up"))
		// Cancel at a random point of the reader's wake-up, which takes
		// some tens of microseconds.
		for end := time.Now().Add(rand.N(200 * time.Microsecond)); time.Now().Before(end); {
		}
		c.SetReadDeadline(time.Now())
		expectTimeout(t, errc, "iteration "+strconv.Itoa(i))
	}
}
