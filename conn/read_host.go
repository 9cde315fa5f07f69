package conn

import (
	"sync"
	"sync/atomic"
	"time"
)

// hostSlots and hostSlotLen size the queue of hostPump: unspread traffic
// (handshakes, keepalives, unclassified flows) is light.
const (
	hostSlots   = 8
	hostSlotLen = 65535
)

// hostPump reads, for the Raw backend, the datagrams sent to this host's
// own addresses: the Raw listener captures only the prefix, but a peer's
// unspread datagrams go to our canonical address, which the kernel
// delivers to the UDP socket. A goroutine reads the socket into a few
// slots of its own and wakes the readers blocked in the Raw listener by
// setting a past read deadline on it (a "kick"); ReadBatch then copies
// the slots out. Nothing is allocated per datagram.
type hostPump struct {
	recv  receiver
	ready chan *Message // filled slots
	free  chan *Message // empty slots
	kick  func()
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	// truncated counts the queued datagrams that take dropped for being
	// longer than the reader's buffer.
	truncated atomic.Uint64
}

func newHostPump(recv receiver, kick func()) *hostPump {
	p := &hostPump{
		recv:  recv,
		ready: make(chan *Message, hostSlots),
		free:  make(chan *Message, hostSlots),
		kick:  kick,
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for range hostSlots {
		p.free <- &Message{Buf: make([]byte, hostSlotLen)}
	}
	go p.run()
	return p
}

func (p *hostPump) run() {
	defer close(p.done)
	var one [1]Message
	var backoff time.Duration
	for {
		var slot *Message
		select {
		case slot = <-p.free:
		case <-p.quit:
			return
		}
		one[0] = Message{Buf: slot.Buf}
		n, err := p.recv.readBatch(one[:])
		if err != nil || n == 0 {
			p.free <- slot
			select {
			case <-p.quit:
				return
			default:
			}
			if err != nil {
				// Not closed, so a transient error: wait, longer each
				// time up to a tenth of a second, so a lasting one
				// neither spins nor stops the pump.
				backoff = min(max(2*backoff, time.Millisecond), 100*time.Millisecond)
				select {
				case <-p.quit:
					return
				case <-time.After(backoff):
				}
			}
			continue
		}
		backoff = 0
		*slot = one[0]
		p.ready <- slot
		p.kick()
	}
}

// take copies up to len(msgs) queued datagrams into msgs without
// blocking and returns how many. A datagram longer than the Buf it would
// go to is dropped and counted, as the backends do.
func (p *hostPump) take(msgs []Message) int {
	n := 0
	for n < len(msgs) {
		select {
		case slot := <-p.ready:
			m := &msgs[n]
			if slot.N <= len(m.Buf) {
				m.N = copy(m.Buf, slot.Buf[:slot.N])
				m.OuterSrc, m.OuterDst, m.ECN = slot.OuterSrc, slot.OuterDst, slot.ECN
				n++
			} else {
				p.truncated.Add(1)
			}
			*slot = Message{Buf: slot.Buf[:cap(slot.Buf)]}
			p.free <- slot
		default:
			return n
		}
	}
	return n
}

// close stops the goroutine and the socket reader and waits for it.
func (p *hostPump) close() error {
	var err error
	p.once.Do(func() {
		close(p.quit)
		err = p.recv.close()
		<-p.done
	})
	return err
}

// pending reports whether datagrams wait to be taken.
func (p *hostPump) pending() bool { return len(p.ready) > 0 }
