package network

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wire copies frames between two AF_PACKET sockets, one goroutine per
// direction, each blocked in recvmmsg until a frame arrives: frames are
// sent on as soon as the kernel hands them over, with no polling interval.
type wire struct {
	a, b packetSocket

	aToBFrames, aToBBytes atomic.Uint64
	bToAFrames, bToABytes atomic.Uint64
	sendErrors, oversize  atomic.Uint64
	delays                [delayBuckets]atomic.Uint64

	mu    sync.Mutex
	drops uint64 // PACKET_STATISTICS resets on every read: keep the sum
}

type packetSocket struct {
	fd   int
	name string
}

// frameBuffer holds one frame. Offloads are off around the wire, so
// frames are at most the MTU plus the Ethernet header; a bigger one is
// counted as oversize, not cut and sent on.
const frameBuffer = 4096

// wireBatch is the most frames one recvmmsg or sendmmsg call moves. A
// bulk TCP window arrives as a burst, and one system call for the burst
// instead of one per frame is what lets the wire keep up under the VM's
// emulated CPU.
const wireBatch = 64

func openWire(a, b string) (*wire, error) {
	sa, err := openPacketSocket(a)
	if err != nil {
		return nil, err
	}
	sb, err := openPacketSocket(b)
	if err != nil {
		unix.Close(sa.fd)
		return nil, err
	}
	return &wire{a: sa, b: sb}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketSocket opens a raw packet socket that receives every frame
// arriving on ifname and sends whole frames out of it.
func openPacketSocket(ifname string) (packetSocket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return packetSocket{}, fmt.Errorf("interface %s: %w", ifname, err)
	}
	// Protocol 0 at creation: the socket receives nothing until it is
	// bound to the one interface, so no frame of another slips in.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return packetSocket{}, fmt.Errorf("AF_PACKET socket (needs CAP_NET_RAW: run as root): %w", err)
	}
	s := packetSocket{fd: fd, name: ifname}
	// Without this the socket would also read back every frame the wire
	// itself sends out of ifname, and forward it again, forever.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		unix.Close(fd)
		return packetSocket{}, fmt.Errorf("PACKET_IGNORE_OUTGOING on %s (needs Linux 4.20): %w", ifname, err)
	}
	// Room for bursts: a TCP sender's window arrives at veth speed, and
	// the router behind the wire drains it at the bottleneck rate.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	// The kernel's receive time of each frame, to measure how long frames
	// waited for the wire: a wire short of CPU delays everything behind it.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		unix.Close(fd)
		return packetSocket{}, fmt.Errorf("SO_TIMESTAMPNS on %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return packetSocket{}, fmt.Errorf("bind AF_PACKET socket to %s: %w", ifname, err)
	}
	return s, nil
}

// run forwards both ways until the process exits.
func (w *wire) run() {
	go w.forward(w.b, w.a, &w.bToAFrames, &w.bToABytes)
	w.forward(w.a, w.b, &w.aToBFrames, &w.aToBBytes)
}

func (w *wire) forward(from, to packetSocket, frames, bytes *atomic.Uint64) {
	b := newBatch()
	for {
		n, ok := b.receive(from)
		if !ok {
			// A socket error is persistent: stop this direction; the
			// counters show that nothing more crossed.
			return
		}
		count := w.queue(b, n)
		w.sendAll(b, to, count, frames, bytes)
	}
}

// batch is one direction's message headers and frame buffers, set up once:
// nothing is allocated per frame.
type batch struct {
	recv, send       [wireBatch]unix.Mmsghdr
	recvIov, sendIov [wireBatch]unix.Iovec
	control          [wireBatch][controlBuffer]byte
	bufs             []byte
}

func newBatch() *batch {
	b := &batch{bufs: make([]byte, wireBatch*frameBuffer)}
	for i := range b.recv {
		b.recvIov[i].Base = &b.bufs[i*frameBuffer]
		b.recvIov[i].SetLen(frameBuffer)
		b.recv[i].Hdr.Iov = &b.recvIov[i]
		b.recv[i].Hdr.SetIovlen(1)
		b.recv[i].Hdr.Control = &b.control[i][0]
		b.send[i].Hdr.Iov = &b.sendIov[i]
		b.send[i].Hdr.SetIovlen(1)
	}
	return b
}

// receive blocks for the first frame, then takes whatever else is queued
// (MSG_WAITFORONE). MSG_TRUNC reports a frame's real length even when the
// buffer was too small. It returns false on a socket error.
func (b *batch) receive(from packetSocket) (int, bool) {
	for {
		for i := range b.recv {
			b.recv[i].Hdr.SetControllen(controlBuffer)
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(from.fd),
			uintptr(unsafe.Pointer(&b.recv[0])), wireBatch, unix.MSG_WAITFORONE|unix.MSG_TRUNC, 0, 0)
		switch errno {
		case 0:
			return int(n), true
		case unix.EINTR:
			continue
		}
		return 0, false
	}
}

// queue times the n frames received and lines up those that fit to be
// sent on, counting the oversize ones; it returns how many it lined up.
func (w *wire) queue(b *batch, n int) int {
	now := time.Now().UnixNano()
	count := 0
	for i := range n {
		if at, ok := receiveTime(&b.recv[i].Hdr); ok {
			w.delays[delayBucket(now-at)].Add(1)
		}
		size := b.recv[i].Len
		if b.recv[i].Hdr.Flags&unix.MSG_TRUNC != 0 || size > frameBuffer {
			w.oversize.Add(1)
			continue
		}
		b.sendIov[count].Base = b.recvIov[i].Base
		b.sendIov[count].SetLen(int(size))
		b.send[count].Len = 0
		count++
	}
	return count
}

// sendAll sends the count frames lined up, counting what went out and
// what the kernel refused.
func (w *wire) sendAll(b *batch, to packetSocket, count int, frames, bytes *atomic.Uint64) {
	for sent := 0; sent < count; {
		m, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(to.fd),
			uintptr(unsafe.Pointer(&b.send[sent])), uintptr(count-sent), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			// The frame at send[sent] was refused (too big for the
			// link, no buffer): count it and go on with the rest.
			w.sendErrors.Add(1)
			sent++
			continue
		}
		for i := sent; i < sent+int(m); i++ {
			frames.Add(1)
			bytes.Add(uint64(b.sendIov[i].Len))
		}
		sent += int(m)
	}
}

// controlBuffer holds one SCM_TIMESTAMPNS control message.
const controlBuffer = 64

// receiveTime returns the kernel's receive timestamp (SCM_TIMESTAMPNS, in
// Unix nanoseconds) from a received message's control data.
func receiveTime(h *unix.Msghdr) (int64, bool) {
	if uint64(h.Controllen) < uint64(unix.CmsgSpace(16)) || h.Control == nil {
		return 0, false
	}
	cmsg := (*unix.Cmsghdr)(unsafe.Pointer(h.Control))
	if cmsg.Level != unix.SOL_SOCKET || cmsg.Type != unix.SCM_TIMESTAMPNS || uint64(cmsg.Len) < uint64(unix.CmsgLen(16)) {
		return 0, false
	}
	ts := (*unix.Timespec)(unsafe.Add(unsafe.Pointer(h.Control), unix.CmsgLen(0)))
	return ts.Nano(), true
}

// stats returns the counters since the wire started.
func (w *wire) stats() WireStats {
	w.mu.Lock()
	for _, s := range []packetSocket{w.a, w.b} {
		if st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			w.drops += uint64(st.Drops)
		}
	}
	drops := w.drops
	w.mu.Unlock()
	return WireStats{
		A: w.a.name, B: w.b.name,
		AToBFrames: w.aToBFrames.Load(), AToBBytes: w.aToBBytes.Load(),
		BToAFrames: w.bToAFrames.Load(), BToABytes: w.bToABytes.Load(),
		KernelDrops: drops, SendErrors: w.sendErrors.Load(), Oversize: w.oversize.Load(),
		Delays: w.delayCounts(),
	}
}

func (w *wire) delayCounts() []uint64 {
	counts := make([]uint64, delayBuckets)
	for i := range w.delays {
		counts[i] = w.delays[i].Load()
	}
	return counts
}
