package wireguard

import (
	"sync/atomic"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// WrapTUN returns a [tun.Device] that reads and writes through dev and
// links each packet to b: Read classifies each plaintext packet and
// records its flow under its buffer, which wireguard-go encrypts in place
// and hands to [Bind.Send]; Write takes what b's receive recorded under
// the buffer wireguard-go decrypted in place, tells the conn the packet's
// flow arrived on that datagram's outer pair
// ([conn.FlowSpreadConn.Observe]), and applies its outer ECN codepoint
// (RFC 6040 decapsulation: CE outside marks an ECN-capable packet CE and
// drops a Not-ECT one).
//
// Read and Write do not allocate, except Write when it drops a packet.
// Hand the result, not dev, to device.NewDevice.
func WrapTUN(dev tun.Device, b *Bind) tun.Device {
	t := &tunDevice{Device: dev, b: b}
	t.mtu.Store(device.DefaultMTU)
	return t
}

type tunDevice struct {
	tun.Device
	b *Bind
	// mtu is the MTU wireguard-go pads to: it asks MTU at start and on
	// each MTU event, and keeps DefaultMTU or the last value when that
	// fails, as this does.
	mtu atomic.Int32
	// observed, if set, is called instead of the conn's Observe: tests
	// see the calls. It takes info by value: a pointer passed through a
	// func value escapes, and would cost an allocation per packet.
	observed func(info conn.RecvInfo, f conn.Flow)
}

// MTU returns the wrapped device's MTU and remembers it, capped as
// wireguard-go caps it, to predict the length of each sealed datagram.
func (t *tunDevice) MTU() (int, error) {
	mtu, err := t.Device.MTU()
	if err == nil && mtu >= 0 {
		t.mtu.Store(int32(min(mtu, device.MaxContentSize)))
	}
	return mtu, err
}

// Read reads from the wrapped device and records the flow of each packet
// by its buffer. Before the Bind is open there is no conn to classify
// with, and packets go out unspread.
func (t *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.Device.Read(bufs, sizes, offset)
	c := t.b.c.Load()
	if c == nil {
		return n, err
	}
	mtu := int(t.mtu.Load())
	for i := 0; i < n; i++ {
		pkt := bufs[i][offset : offset+sizes[i]]
		t.b.recordFlow(bufs[i], offset, len(pkt), c.Classify(pkt), mtu)
	}
	return n, err
}

// Write tells the conn about each packet's datagram and writes the
// packets to the wrapped device. For a packet whose buffer the Bind's
// receive filled (see [Bind.takeReceived]) it calls
// [conn.FlowSpreadConn.Observe] with what the read said and the packet's
// flow. Observe must only ever see authenticated plaintext, or a forger
// could steer where we send: that holds because wireguard-go writes to
// the TUN only packets that decrypted with the peer's key, passed the
// replay filter and came from the peer's allowed IPs
// (RoutineSequentialReceiver in device/receive.go); a forgery or a
// replay is dropped there, and its record stays unused until its buffer
// is filled again. Then it applies the outer ECN codepoint. A
// packet whose buffer has no matching record is written as it is, and
// observed by no one.
func (t *tunDevice) Write(bufs [][]byte, offset int) (int, error) {
	c := t.b.c.Load()
	if c == nil || offset < 0 {
		return t.Device.Write(bufs, offset)
	}
	var keep [][]byte // allocated only when a packet is dropped
	var observed uint64
	for i, buf := range bufs {
		info, ok := t.b.takeReceived(buf, offset)
		if !ok {
			t.b.recvUnmatched.Add(1)
		} else {
			pkt := buf[offset:]
			if f := c.Classify(pkt); t.observed != nil {
				t.observed(info, f)
			} else {
				c.Observe(&info, f)
			}
			observed++
			if info.ECN == flowaddr.CE {
				drop, err := c.Decapsulate(pkt, info.ECN)
				switch {
				case drop:
					t.b.ceDropped.Add(1)
					if keep == nil {
						keep = append(make([][]byte, 0, len(bufs)), bufs[:i]...)
					}
					continue
				case err == nil:
					t.b.ceMarked.Add(1)
				}
			}
		}
		if keep != nil {
			keep = append(keep, buf)
		}
	}
	t.b.observed.Add(observed)
	if keep == nil {
		return t.Device.Write(bufs, offset)
	}
	if len(keep) == 0 {
		return len(bufs), nil
	}
	n, err := t.Device.Write(keep, offset)
	if err != nil {
		return n, err
	}
	return len(bufs), nil
}
