package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
)

const (
	// rawSlots is the most packets one recvmmsg(2) call asks for.
	rawSlots = 64
	// rawOOBLen holds the PACKET_AUXDATA control message (40 bytes).
	rawOOBLen = 64
)

// rawReceiver reads the datagrams sent to a prefix straight off an
// interface with an AF_PACKET socket, for hosts where the prefix is not
// routed locally (no AnyIP route, or the addresses are someone else's to
// answer). A classic BPF filter in the kernel keeps only IPv6 packets with
// UDP right after the IPv6 header, to the prefix and the port. The kernel's
// UDP layer never sees these packets, so the receiver checks their lengths
// and verifies the UDP checksum itself.
//
// Each packet is read with two iovecs: its IPv6 and UDP headers into the
// receiver's own buffer, its payload straight into the caller's.
type rawReceiver struct {
	f      *os.File
	rc     syscall.RawConn
	ifname string
	prefix netip.Prefix
	port   uint16
	closed atomic.Bool
	quit   chan struct{} // closed by close: stops followLink

	truncated, badChecksum atomic.Uint64
	linkDown, rebound      atomic.Uint64

	// following says a followLink goroutine runs; linkEvent says the
	// link went down since it last looked.
	following, linkEvent atomic.Bool

	mu    sync.Mutex // serializes readBatch; guards everything below
	hdrs  [rawSlots]unix.Mmsghdr
	iovs  [rawSlots][2]unix.Iovec
	heads [rawSlots][rawHeadLen]byte
	names [rawSlots]unix.RawSockaddrLinklayer
	oob   [rawSlots * rawOOBLen]byte

	read  func(fd uintptr) bool // doRead, made once
	want  int
	got   int
	errno syscall.Errno
}

// newRawReceiver opens an AF_PACKET socket on the interface named ifname
// that receives the UDP datagrams sent to any address of prefix on port.
// It needs CAP_NET_RAW.
//
// Packets this host sends out of the interface are ignored. The filter
// admits no IPv6 extension headers before UDP, and reads plain Ethernet
// (or any link type: it sees packets from the network header on), not
// VLAN-tagged frames on the parent of a VLAN interface: open it on the
// VLAN interface instead.
func newRawReceiver(ifname string, prefix netip.Prefix, port uint16) (receiver, error) {
	prog, err := rawFilter(prefix, port)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("conn: raw receiver: assemble filter: %w", err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("conn: raw receiver: interface %q: %w", ifname, err)
	}
	// Protocol 0 receives nothing until bind, so no packet slips in
	// before the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("conn: raw receiver needs CAP_NET_RAW: run as root or grant it with setcap cap_net_raw+ep: %w", err)
		}
		return nil, fmt.Errorf("conn: raw receiver: open AF_PACKET socket: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(raw)), Filter: (*unix.SockFilter)(unsafe.Pointer(&raw[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("conn: raw receiver: attach BPF filter: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("conn: raw receiver: enable PACKET_AUXDATA: %w", err)
	}
	// Linux 4.20+; older kernels show our own packets, which readBatch
	// skips by their packet type.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	// The same large buffer as the UDP socket's: with the default, a
	// burst of a few dozen datagrams overflows it and is lost whole.
	setSocketBuffers(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("conn: raw receiver: bind to interface %q: %w", ifname, err)
	}
	r := &rawReceiver{ifname: ifname, prefix: prefix.Masked(), port: port, quit: make(chan struct{})}
	r.f = os.NewFile(uintptr(fd), "packet:"+ifname)
	if r.rc, err = r.f.SyscallConn(); err != nil {
		r.f.Close()
		return nil, fmt.Errorf("conn: raw receiver: %w", err)
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i][0]
		h.SetIovlen(2)
		h.Control = &r.oob[i*rawOOBLen]
		r.iovs[i][0].Base = &r.heads[i][0]
		r.iovs[i][0].SetLen(rawHeadLen)
	}
	r.read = r.doRead
	return r, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (r *rawReceiver) caps() recvCaps { return recvCaps{Batch: true} }

func (r *rawReceiver) drops() RecvDrops {
	return RecvDrops{
		Truncated: r.truncated.Load(), BadChecksum: r.badChecksum.Load(),
		LinkDown: r.linkDown.Load(), Rebound: r.rebound.Load(),
	}
}

func (r *rawReceiver) setReadDeadline(t time.Time) error {
	if err := r.f.SetReadDeadline(t); err != nil {
		if r.closed.Load() {
			return net.ErrClosed
		}
		return err
	}
	return nil
}

func (r *rawReceiver) close() error {
	if r.closed.Swap(true) {
		return nil
	}
	close(r.quit)
	return r.f.Close()
}

// readBatch implements [receiver]. It does not allocate, except to build
// an error.
func (r *rawReceiver) readBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		n, err := r.readOnce(msgs)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

func (r *rawReceiver) readOnce(msgs []Message) (int, error) {
	if r.closed.Load() {
		return 0, net.ErrClosed
	}
	want := min(len(msgs), rawSlots)
	for i := 0; i < want; i++ {
		h := &r.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.SetControllen(rawOOBLen)
		h.Flags = 0
		r.iovs[i][1].Base = unsafe.SliceData(msgs[i].Buf)
		r.iovs[i][1].SetLen(len(msgs[i].Buf))
	}
	r.want = want
	err := r.rc.Read(r.read)
	for i := 0; i < want; i++ {
		r.iovs[i][1].Base = nil // keep no pointer to the caller's buffers
	}
	if err != nil {
		if r.closed.Load() {
			// An os.File reports "use of closed file"; callers test for
			// net.ErrClosed.
			return 0, net.ErrClosed
		}
		return 0, err
	}
	if r.errno == unix.ENETDOWN {
		// The interface went down or away: not the reader's failure.
		// Wait for it to come back (the kernel resumes on link up;
		// followLink rebinds a re-created interface).
		r.linkDown.Add(1)
		r.followLinkOnce()
		return 0, nil
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	out := 0
	for i := 0; i < r.got; i++ {
		if r.names[i].Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		captured := int(r.hdrs[i].Len)
		skip := r.checksumDone(i)
		n, v := checkRawPacket(&r.heads[i], msgs[i].Buf, captured, r.prefix, r.port, skip)
		switch v {
		case rawTruncated:
			r.truncated.Add(1)
			continue
		case rawBadChecksum:
			r.badChecksum.Add(1)
			continue
		case rawForeign:
			continue
		}
		if out != i {
			// Move the datagram down with its buffer: it fit the buffer
			// it was read into, which a shorter one at out may not.
			msgs[out], msgs[i] = msgs[i], msgs[out]
		}
		m := &msgs[out]
		head := &r.heads[i]
		m.N = n
		m.OuterSrc = netip.AddrPortFrom(netip.AddrFrom16([16]byte(head[8:24])), uint16(head[40])<<8|uint16(head[41]))
		m.OuterDst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(head[24:40])), r.port)
		m.ECN = flowaddr.ECN(head[1]>>4) & 3 // the low bits of the traffic class
		out++
	}
	return out, nil
}

// checksumDone reports whether the kernel vouches for slot i's UDP
// checksum: the device verified it (TP_STATUS_CSUM_VALID), or the packet
// comes from a local stack that leaves the checksum to the device
// (TP_STATUS_CSUMNOTREADY, as on a veth), so there is nothing to verify.
func (r *rawReceiver) checksumDone(i int) bool {
	b := r.oob[i*rawOOBLen : i*rawOOBLen+int(r.hdrs[i].Hdr.Controllen)]
	for len(b) > 0 {
		level, typ, data, rest, ok := nextCmsg(b)
		if !ok {
			break
		}
		if level == unix.SOL_PACKET && typ == unix.PACKET_AUXDATA && len(data) >= 4 {
			status := binary.NativeEndian.Uint32(data) // tp_status, the first field
			return status&(unix.TP_STATUS_CSUM_VALID|unix.TP_STATUS_CSUMNOTREADY) != 0
		}
		b = rest
	}
	return false
}

// doRead is the RawConn.Read callback: false asks the poller to wait.
func (r *rawReceiver) doRead(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])),
			uintptr(r.want), 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.got, r.errno = int(n), errno
		return true
	}
}
