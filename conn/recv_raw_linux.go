package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn/internal/sockopt"
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
// answer). A classic BPF filter in the kernel keeps only IPv6 packets to
// the prefix with UDP right after the IPv6 header (to the port) or a
// Fragment header. The kernel's IP and UDP layers never see these
// packets, so the receiver does their work: it refuses what they would
// refuse (linkLayerOK, badSource), checks lengths, reassembles fragments
// and verifies the UDP checksum.
//
// Each packet is read with two iovecs: its first 48 bytes into the
// receiver's own buffer, the rest straight into the caller's. For a whole
// datagram those are the IPv6 and UDP headers, and the payload lands in
// place; for a fragment, the IPv6 and Fragment headers, and the
// fragment's data (the UDP header first, in the first fragment) is copied
// into the reassembler, then the datagram it completes into the caller's
// buffer.
type rawReceiver struct {
	f      *os.File
	rc     syscall.RawConn
	ifname string
	prefix netip.Prefix
	port   uint16
	closed atomic.Bool
	quit   chan struct{} // closed by close: stops followLink

	// following says a followLink goroutine runs; linkEvent says the
	// link went down since it last looked.
	following, linkEvent atomic.Bool
	// ifindex is the interface's: frames the kernel passed on to an
	// interface stacked on it (a VLAN, a macvlan) carry another.
	ifindex atomic.Int32 // followLink stores a re-created interface's
	// l2Multicast: unicast IPv6 in link-layer broadcast or multicast
	// frames is accepted, as the kernel does unless the interface's
	// drop_unicast_in_l2_multicast sysctl is set (read at open).
	l2Multicast bool
	loopback    bool      // the interface is a loopback device: ::1 is fine
	epoch       time.Time // the reassembler's clock starts here
	reasm       *reassembler

	truncated, badChecksum, badSource atomic.Uint64
	linkDown, rebound                 atomic.Uint64

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
// admits no IPv6 extension headers before UDP but a Fragment header, and
// reads plain Ethernet (or any link type: it sees packets from the
// network header on), not the frames of a VLAN interface on its parent:
// open it on the VLAN interface instead.
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
	sockopt.SetBuffers(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("conn: raw receiver: bind to interface %q: %w", ifname, err)
	}
	r := &rawReceiver{
		ifname: ifname, prefix: prefix.Masked(), port: port, quit: make(chan struct{}),
		loopback: ifi.Flags&net.FlagLoopback != 0, epoch: time.Now(), reasm: newReassembler(reasmEntries),
	}
	r.ifindex.Store(int32(ifi.Index))
	// The path, not the dotted sysctl name: a VLAN's name has a dot.
	v, _ := os.ReadFile("/proc/sys/net/ipv6/conf/" + ifname + "/drop_unicast_in_l2_multicast")
	r.l2Multicast = strings.TrimSpace(string(v)) != "1"
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

func (r *rawReceiver) drops() recvDrops {
	return recvDrops{
		Truncated: r.truncated.Load(), BadChecksum: r.badChecksum.Load(), BadSource: r.badSource.Load(),
		LinkDown: r.linkDown.Load(), Rebound: r.rebound.Load(),
		FragmentsDropped: r.reasm.fragmentsDropped.Load(), Reassembled: r.reasm.reassembled.Load(),
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
	now := time.Since(r.epoch)
	for i := 0; i < r.got; i++ {
		name := &r.names[i]
		if name.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		status, tci := r.auxdata(i)
		if !r.linkLayerOK(name.Pkttype, name.Ifindex, status, tci) {
			r.badSource.Add(1)
			continue
		}
		skip := status&(unix.TP_STATUS_CSUM_VALID|unix.TP_STATUS_CSUMNOTREADY) != 0
		d, v := readRawPacket(&r.heads[i], msgs[i].Buf, int(r.hdrs[i].Len), r.prefix, r.port, skip, r.loopback, r.reasm, now)
		switch v {
		case rawTruncated:
			r.truncated.Add(1)
			continue
		case rawBadChecksum:
			r.badChecksum.Add(1)
			continue
		case rawBadSource:
			r.badSource.Add(1)
			continue
		case rawForeign, rawFragment:
			continue
		}
		n := len(d.payload)
		if d.moved {
			// Reassembled: the fragment read into msgs[i].Buf is spent,
			// so the whole datagram goes there.
			if n > len(msgs[i].Buf) {
				r.truncated.Add(1)
				continue
			}
			copy(msgs[i].Buf, d.payload)
		}
		if out != i {
			// Move the datagram down with its buffer: it fit the buffer
			// it was read into, which a shorter one at out may not.
			msgs[out], msgs[i] = msgs[i], msgs[out]
		}
		m := &msgs[out]
		head := &r.heads[i]
		m.N = n
		m.OuterSrc = netip.AddrPortFrom(netip.AddrFrom16([16]byte(head[8:24])), d.sport)
		m.OuterDst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(head[24:40])), r.port)
		m.ECN = d.ecn
		out++
	}
	return out, nil
}

// linkLayerOK reports whether the kernel's own receive path would take a
// frame to the IP layer of this interface: one addressed to this host
// (PACKET_HOST; link-layer broadcast and multicast too, unless
// drop_unicast_in_l2_multicast is set), not one for another host (a
// promiscuous NIC, a bridge port: PACKET_OTHERHOST, also what the kernel
// makes of a frame tagged for a VLAN it has no interface for), and not
// one it handed to an interface stacked on this one (a VLAN's frames
// reach a packet socket on its parent with the VLAN interface's index).
func (r *rawReceiver) linkLayerOK(pkttype uint8, ifindex int32, status uint32, tci uint16) bool {
	switch pkttype {
	case unix.PACKET_HOST:
	case unix.PACKET_BROADCAST, unix.PACKET_MULTICAST:
		if !r.l2Multicast {
			return false
		}
	default:
		return false
	}
	// The kernel strips a VLAN tag before IP sees a frame, so a tag left
	// on one (other than a priority tag, VLAN 0) was never untagged.
	if status&unix.TP_STATUS_VLAN_VALID != 0 && tci&0xfff != 0 {
		return false
	}
	return ifindex == r.ifindex.Load()
}

// auxdata returns slot i's PACKET_AUXDATA status (TP_STATUS_*) and VLAN
// tag control information. The status says whether the kernel vouches
// for the UDP checksum: the device verified it (TP_STATUS_CSUM_VALID), or
// the packet comes from a local stack that leaves the checksum to the
// device (TP_STATUS_CSUMNOTREADY, as on a veth), so there is nothing to
// verify.
func (r *rawReceiver) auxdata(i int) (status uint32, tci uint16) {
	b := r.oob[i*rawOOBLen : i*rawOOBLen+int(r.hdrs[i].Hdr.Controllen)]
	for len(b) > 0 {
		level, typ, data, rest, ok := nextCmsg(b)
		if !ok {
			break
		}
		// struct tpacket_auxdata: tp_status, tp_len, tp_snaplen (u32),
		// tp_mac, tp_net, tp_vlan_tci (u16).
		if level == unix.SOL_PACKET && typ == unix.PACKET_AUXDATA && len(data) >= 18 {
			return binary.NativeEndian.Uint32(data), binary.NativeEndian.Uint16(data[16:])
		}
		b = rest
	}
	return 0, 0
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
