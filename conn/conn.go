package conn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
)

// FlowSpreadConn is a UDP [net.PacketConn] that sends each inner flow from
// its own outer address pair, and reads datagrams from any address of a
// peer's range as coming from the peer's canonical address.
//
// All methods are safe for concurrent use. It deliberately has no
// SyscallConn or ReadMsgUDP: libraries that find those drive the socket
// directly and would bypass the spreading.
type FlowSpreadConn struct {
	uc        *net.UDPConn
	rc        syscall.RawConn
	recv      receiver
	localAddr *net.UDPAddr

	prefix    netip.Prefix
	local     *flowaddr.Mapper          // nil: no source addresses spread
	ourBits   rangeBitsPair             // the size of our range, for peers added later
	peers     atomic.Pointer[peerTable] // swapped whole by SetPeer and RemovePeer
	peersMu   sync.Mutex                // serializes SetPeer and RemovePeer
	layout    flowaddr.Layout           // Config.Layout and PermKey, for peers added later
	permKey   [16]byte
	symmetric bool
	flowLabel bool
	// acceptUnknown delivers datagrams from strangers (Config.AcceptUnknown).
	acceptUnknown bool

	policy hash.Policy
	// timeless: the policy ignores the time (hash.Static), so the clock
	// is not read per packet.
	timeless bool

	// Path learning (paths.go): the path clock counts ticks from epoch;
	// recvClock is its value at the last read, for Observe. pathTimeout
	// is Config.PathTimeout in ticks; probe is Config.Probe.
	epoch       time.Time
	recvClock   atomic.Uint32
	pathTimeout uint32
	probe       bool

	// ports is our port range (Len 0: none); portShift is 32 - its bits
	// (see portIndex). portRC[i] sends from port ports.Port(i): its
	// socket is portConns[i].
	ports     PortRange
	portShift uint8
	portConns []*net.UDPConn
	portRC    []syscall.RawConn
	// ring sends a batch that leaves from several sockets with one
	// system call (nil: no port range, or no io_uring here); sockMu
	// keeps Close from closing it under a send.
	ring   *msgRing
	sockMu sync.RWMutex
	// portTClass says every IPv6 datagram from a port's socket carries
	// its ECN in an IPV6_TCLASS message, 0 included: the ring may have
	// set the socket's own IPV6_TCLASS (msgRing.pickSends), which a
	// datagram without the message would take. Set with the ring, for
	// good.
	portTClass bool
	// ecnConns send the spread datagrams of ECN-capable flows when we
	// spread over addresses alone: ecnConns[i] marks each datagram with
	// ecnSocketCodepoints[i] itself (see openECNSockets). ecnSock[e] is
	// the outerHdr.sock of codepoint e's socket, 0 for none; they come
	// after the port range's: 1+len(portConns)+i.
	ecnConns []*net.UDPConn
	ecnRC    []syscall.RawConn
	ecnSock  [4]uint16

	snd     sender
	readers sync.Pool // *[1]Message for the single-datagram reads
	stats   counters

	// With the Raw backend: the reader of our own addresses, and the read
	// deadline the caller set (Unix ns, 0 for none), which the pump's
	// wake-ups overwrite on the Raw listener.
	host         *hostPump
	readDeadline atomic.Int64
	// deadlineMu makes SetReadDeadline and a reader's restoring of
	// readDeadline on the listener atomic with each other, so neither
	// overwrites the other with a stale deadline.
	deadlineMu sync.Mutex

	closeOnce sync.Once
	closed    atomic.Bool
}

var _ net.PacketConn = (*FlowSpreadConn)(nil)

// ecnSocketCodepoints are the ECN codepoints that get a socket of their
// own (openECNSockets), in the order of c.ecnConns: the two a sender
// sets on a whole flow. CE marks single packets of such a flow; it goes
// out from the canonical socket with a control message.
var ecnSocketCodepoints = [...]flowaddr.ECN{flowaddr.ECT0, flowaddr.ECT1}

// Listen opens a FlowSpreadConn: a UDP socket bound to [::]:cfg.Port that
// may send from any address of cfg.Prefix (IPV6_FREEBIND, or
// IPV6_TRANSPARENT when cfg.Transparent), and the receive backend that
// cfg.Receive selects. It probes UDP GSO and GRO and uses them where the
// kernel has them.
//
// The prefix must reach this host: for the default [AnyIP] backend, add the
// local route `ip -6 route add local PREFIX dev lo` (or call
// [github.com/flowspread/flowspread/conn/host.AddLocalRoute]); Listen does
// not check this, [github.com/flowspread/flowspread/conn/host.Diagnose]
// does.
func Listen(cfg Config) (*FlowSpreadConn, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	c := &FlowSpreadConn{
		prefix:    cfg.Range.Prefix,
		ourBits:   localBits(&cfg),
		ports:     cfg.Range.Ports,
		portShift: uint8(32 - cfg.Range.Ports.Bits),
		layout:    cfg.Layout,
		permKey:   cfg.PermKey,
		symmetric: cfg.Symmetric,
		flowLabel: cfg.FlowLabel,

		acceptUnknown: cfg.AcceptUnknown,

		epoch:       time.Now(),
		pathTimeout: uint32(max(1, cfg.PathTimeout>>tickShift)),
		probe:       cfg.Probe,
	}
	c.recvClock.Store(1)
	if err = c.initPeers(&cfg); err != nil {
		return nil, err
	}
	if cfg.Range.Prefix.IsValid() {
		c.local, err = flowaddr.NewMapper(flowaddr.MapperConfig{
			Prefix: cfg.Range.Prefix, Bits: cfg.Range.Bits, Layout: cfg.Layout, PermKey: cfg.PermKey,
		})
		if err != nil {
			return nil, fmt.Errorf("conn: Range.Prefix %v: %w", cfg.Range.Prefix, err)
		}
		c.stats.buckets = make([]atomic.Uint64, c.local.Len())
	}
	c.policy = cfg.Policy
	if c.policy == nil {
		key := cfg.Key
		if key == (hash.Key{}) {
			if key, err = hash.NewKey(); err != nil {
				return nil, fmt.Errorf("conn: make a random hash key: %w", err)
			}
		}
		c.policy = hash.NewStatic(hash.NewSipHash24(key))
	}
	_, c.timeless = c.policy.(*hash.Static)
	c.readers.New = func() any { return new([1]Message) }

	// The port range's sockets first, so that a free canonical port
	// (Port 0) is never one of theirs.
	if c.portConns, err = openPortSockets(&cfg); err != nil {
		return nil, err
	}
	// Spreading over addresses alone, an ECN-capable flow's datagrams go
	// out from a socket of their codepoint (openECNSockets).
	ecnSockets := cfg.Range.Prefix.IsValid() && len(c.portConns) == 0
	// Steering the port range's datagrams, the canonical port is shared
	// with the steering's decoy (portSteer). Shared either way, the port
	// closes to other sockets once the receiver is open.
	_, raw := cfg.Receive.(Raw)
	steerable := len(c.portConns) > 0 && !cfg.DisablePortSteering && !raw
	shared := ecnSockets || steerable
	uc, caps, err := openSocket(&cfg, cfg.Port, shared)
	if err != nil {
		closeAll(c.portConns)
		return nil, err
	}
	if ecnSockets {
		c.ecnConns = openECNSockets(&cfg, uc)
	}
	// fail closes what Listen opened so far.
	fail := func(err error) (*FlowSpreadConn, error) {
		if c.ring != nil {
			c.ring.close()
		}
		uc.Close()
		closeAll(c.portConns)
		closeAll(c.ecnConns)
		return nil, err
	}
	c.uc = uc
	c.localAddr = uc.LocalAddr().(*net.UDPAddr)
	if c.rc, err = uc.SyscallConn(); err != nil {
		return fail(fmt.Errorf("conn: %w", err))
	}
	for _, pc := range c.portConns {
		rc, err := pc.SyscallConn()
		if err != nil {
			return fail(fmt.Errorf("conn: %w", err))
		}
		c.portRC = append(c.portRC, rc)
	}
	for i, ec := range c.ecnConns {
		rc, err := ec.SyscallConn()
		if err != nil {
			return fail(fmt.Errorf("conn: %w", err))
		}
		c.ecnRC = append(c.ecnRC, rc)
		c.ecnSock[ecnSocketCodepoints[i]] = uint16(1 + len(c.portConns) + i)
	}
	if len(c.portConns) > 0 {
		c.stats.ports = make([]atomic.Uint64, len(c.portConns))
		c.openRing()
	}
	c.snd.init(caps)

	switch r := cfg.Receive.(type) {
	case Raw:
		c.recv, err = newRawReceiver(r.Interface, cfg.Range.Prefix, uint16(c.localAddr.Port))
		if err == nil {
			// The listener sees only the prefix; peers' unspread
			// datagrams come to our own address, on the socket.
			var sock receiver
			if sock, err = newAnyIPReceiver([]*net.UDPConn{uc}, true, false); err != nil {
				c.recv.close()
			} else {
				c.host = newHostPump(sock, c.wakeReaders)
			}
		}
	default:
		c.recv, err = newAnyIPReceiver(append([]*net.UDPConn{uc}, c.portConns...), cfg.DisableGRO, !cfg.DisablePortSteering)
	}
	if err != nil {
		return fail(fmt.Errorf("conn: open the receive backend: %w", err))
	}
	if shared {
		if err := unshare(uc); err != nil {
			c.recv.close()
			return fail(fmt.Errorf("conn: close the canonical port to other sockets: %w", err))
		}
	}
	return c, nil
}

// Close closes the socket and the receive backend. Blocked reads and
// writes return an error that wraps [net.ErrClosed]; so do all later
// calls. Close is safe to call more than once; later calls return nil.
func (c *FlowSpreadConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		errRecv := c.recv.close()
		if c.host != nil {
			errRecv = errors.Join(errRecv, c.host.close())
		}
		c.sockMu.Lock() // no ring send in flight on the sockets
		if c.ring != nil {
			c.ring.close() // first: it holds the sockets open
		}
		errSock := c.uc.Close()
		c.sockMu.Unlock()
		for _, pc := range slices.Concat(c.portConns, c.ecnConns) {
			if e := pc.Close(); !errors.Is(e, net.ErrClosed) {
				errSock = errors.Join(errSock, e)
			}
		}
		if errors.Is(errRecv, net.ErrClosed) {
			errRecv = nil // the backend may close the shared socket itself
		}
		if errors.Is(errSock, net.ErrClosed) {
			errSock = nil
		}
		if e := errors.Join(errRecv, errSock); e != nil {
			err = &net.OpError{Op: "close", Net: "udp", Addr: c.localAddr, Err: e}
		}
	})
	return err
}

// closeAll closes the sockets of a port range that Listen gives up on.
func closeAll(conns []*net.UDPConn) {
	for _, pc := range conns {
		pc.Close()
	}
}

// LocalAddr returns the socket's address: [::] and the canonical port.
func (c *FlowSpreadConn) LocalAddr() net.Addr { return c.localAddr }

// SetDeadline sets the read and write deadlines, as [net.Conn] does.
func (c *FlowSpreadConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets when blocked and future reads fail with an error
// whose Timeout method reports true and that wraps
// [os.ErrDeadlineExceeded]. The zero time means no deadline.
func (c *FlowSpreadConn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", nil, net.ErrClosed)
	}
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	c.readDeadline.Store(ns)
	if err := c.recv.setReadDeadline(t); err != nil {
		return c.opError("set", nil, err)
	}
	if c.host != nil && c.host.pending() {
		// t may have replaced the host pump's kick before a reader saw
		// it: kick again, or the datagram waits until t.
		c.wakeReaders()
	}
	return nil
}

// wakeReaders makes readers blocked in the Raw listener return, so they
// pick up what the host pump queued: it sets a past deadline, which
// ReadBatch tells from the caller's by readDeadline.
func (c *FlowSpreadConn) wakeReaders() { c.recv.setReadDeadline(time.Unix(0, 1)) }

// restoreDeadline puts the caller's read deadline back on the Raw
// listener after a wake-up. It holds deadlineMu from reading the deadline
// to setting it, so a concurrent SetReadDeadline (such as one that
// cancels the read with a past time) lands before or after, never in
// between, where it would be overwritten and lost.
func (c *FlowSpreadConn) restoreDeadline() {
	c.deadlineMu.Lock()
	c.recv.setReadDeadline(c.callerDeadline())
	c.deadlineMu.Unlock()
}

// deadlinePassed reports whether the caller's read deadline has passed.
func (c *FlowSpreadConn) deadlinePassed() bool {
	d := c.readDeadline.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// callerDeadline returns the caller's read deadline.
func (c *FlowSpreadConn) callerDeadline() time.Time {
	if d := c.readDeadline.Load(); d != 0 {
		return time.Unix(0, d)
	}
	return time.Time{}
}

// SetWriteDeadline sets when blocked and future writes fail with a timeout
// error. Writes block only while the socket's send buffer is full.
func (c *FlowSpreadConn) SetWriteDeadline(t time.Time) error {
	if err := c.uc.SetWriteDeadline(t); err != nil {
		return c.opError("set", nil, unwrapOp(err))
	}
	for _, pc := range slices.Concat(c.portConns, c.ecnConns) {
		if err := pc.SetWriteDeadline(t); err != nil {
			return c.opError("set", nil, unwrapOp(err))
		}
	}
	return nil
}

// opError wraps err as the net package does for a PacketConn.
func (c *FlowSpreadConn) opError(op string, addr net.Addr, err error) error {
	if c.closed.Load() && !errors.Is(err, net.ErrClosed) {
		err = net.ErrClosed
	}
	e := &net.OpError{Op: op, Net: "udp", Err: err}
	if op == "write" {
		e.Source, e.Addr = c.localAddr, addr
	} else {
		e.Addr = c.localAddr
	}
	return e
}

// unwrapOp returns the cause inside a *net.OpError, so that errors from
// the net package are not wrapped twice.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// Stats is a snapshot of a conn's counters.
type Stats struct {
	// Sent and SentBytes count datagrams (and their payload bytes) handed
	// to the kernel, not counting probe copies; SentUnspread counts those
	// sent without a spread source address (unclassified flows, unknown
	// peers, no Prefix), apart from those of SentWaiting.
	Sent, SentBytes, SentUnspread uint64
	// SentPerAddress counts spread datagrams by source address: index b
	// is the b-th address of our range (bucket b). Nil without a
	// Range.Prefix. SentPerPort counts them by source port: index i is
	// port Range.Ports.Port(i). Nil without Range.Ports.
	SentPerAddress, SentPerPort []uint64
	// GSOSends counts super-datagrams sent with UDP GSO, each carrying
	// several of the Sent datagrams.
	GSOSends uint64
	// SendErrors counts datagrams the kernel refused.
	SendErrors uint64
	// SentWaiting counts datagrams of a classified flow to a spreading
	// peer sent on the canonical pair because their spread pair was not
	// known open (see [Peer.Open]); SentProbes counts the copies sent on
	// spread pairs as probes (Config.Probe); PathsOpened counts the
	// times a flow's spread pair became known open through Observe.
	SentWaiting, SentProbes, PathsOpened uint64

	// Received and ReceivedBytes count datagrams delivered to the caller.
	Received, ReceivedBytes uint64
	// ReceivedUnknown counts the datagrams among Received that came from a
	// source that is no peer's, delivered for Config.AcceptUnknown.
	ReceivedUnknown uint64
	// DroppedForeign counts datagrams from a source that is no peer's
	// canonical address or spread range (with the peer's port).
	DroppedForeign uint64
	// DroppedOutsideRange counts datagrams from a peer's spread range to
	// an address of our Prefix outside our spread range: the peer's idea
	// of our Prefix, Bits, Layout or PermKey differs from ours.
	DroppedOutsideRange uint64
	// RecvTruncated counts datagrams dropped for being longer than the
	// reader's buffer (every backend drops those, never delivers them
	// cut short) and malformed frames; RecvBadChecksum, datagrams with a
	// bad UDP checksum that the Raw backend threw away (the kernel drops
	// those itself for the AnyIP backend).
	RecvTruncated, RecvBadChecksum uint64
	// RecvLinkDown counts the times the Raw backend's interface went
	// down or was deleted under it. Reads do not fail for it: they wait,
	// and resume when the link is up again. RecvRebound counts the times
	// the interface came back under the same name as a new device (a
	// re-created tap, veth or USB NIC) and the backend bound to it.
	RecvLinkDown, RecvRebound uint64
	// RecvBadSource counts datagrams refused for where they came from or
	// went to, with any backend: an IPv4-mapped source (::ffff:a.b.c.d)
	// in an IPv6 packet, whose reply would go to an IPv4 address (even
	// 127.0.0.1), an unspecified, loopback or multicast source, or a
	// multicast or broadcast destination. The Raw backend also counts
	// here the frames the kernel's IP input would have refused: frames
	// to another host's link address (a promiscuous NIC, a bridge port)
	// and frames of a VLAN or other interface stacked on its Interface.
	RecvBadSource uint64
	// RecvReassembled counts datagrams the Raw backend put back together
	// from IPv6 fragments (the kernel does it for the AnyIP backend);
	// RecvFragmentsDropped counts the fragments it threw away instead:
	// overlapping ones (RFC 5722), malformed ones, and those of
	// datagrams over the reassembly limits, never completed within
	// their time, or pushed out to make room (see [Raw]).
	RecvReassembled, RecvFragmentsDropped uint64
	// DroppedECN counts inner packets that [FlowSpreadConn.Decapsulate]
	// said to drop (CE on a Not-ECT inner packet, RFC 6040).
	DroppedECN uint64

	// GSO says UDP GSO is in use for sending: the kernel has it, it was
	// not disabled, and the kernel has not refused it at run time.
	GSO bool
	// GRO says the receive backend coalesces with UDP GRO.
	GRO bool
	// BatchRead says the receive backend reads many datagrams per call.
	BatchRead bool
	// RingSend says a batch that leaves from several ports of
	// Range.Ports goes out with one io_uring system call; false with
	// ports means the kernel has no io_uring (or forbids it), and such
	// a batch costs a sendmmsg per port.
	RingSend bool
	// PortSteering says the datagrams to every port of Range.Ports come
	// to one socket, read in batches as without ports, by a BPF program
	// (Linux 5.9, CAP_BPF and CAP_NET_ADMIN); false with ports means the
	// reader takes them from each port's socket, which costs more system
	// calls per datagram when traffic is spread thin over many ports.
	// Config.DisablePortSteering turns it off.
	PortSteering bool
}

// counters are the live Stats. Send and receive counters sit on different
// cache lines, so readers and writers on different cores do not contend.
type counters struct {
	sent, sentBytes, sentUnspread, gsoSends, sendErrors atomic.Uint64
	sentWaiting, sentProbes                             atomic.Uint64
	_                                                   [8]byte
	received, receivedBytes, receivedUnknown            atomic.Uint64
	droppedForeign, droppedOutsideRange, droppedECN     atomic.Uint64
	droppedBadSource, pathsOpened                       atomic.Uint64
	buckets, ports                                      []atomic.Uint64
}

// Stats returns a snapshot of the counters. It is safe for concurrent use
// and allocates the SentPerAddress slice.
func (c *FlowSpreadConn) Stats() Stats {
	s := Stats{
		Sent:                c.stats.sent.Load(),
		SentBytes:           c.stats.sentBytes.Load(),
		SentUnspread:        c.stats.sentUnspread.Load(),
		GSOSends:            c.stats.gsoSends.Load(),
		SendErrors:          c.stats.sendErrors.Load(),
		SentWaiting:         c.stats.sentWaiting.Load(),
		SentProbes:          c.stats.sentProbes.Load(),
		PathsOpened:         c.stats.pathsOpened.Load(),
		Received:            c.stats.received.Load(),
		ReceivedBytes:       c.stats.receivedBytes.Load(),
		ReceivedUnknown:     c.stats.receivedUnknown.Load(),
		DroppedForeign:      c.stats.droppedForeign.Load(),
		DroppedOutsideRange: c.stats.droppedOutsideRange.Load(),
		DroppedECN:          c.stats.droppedECN.Load(),
		RecvBadSource:       c.stats.droppedBadSource.Load(),
		GSO:                 c.snd.gsoEnabled(),
		RingSend:            c.ring != nil,
		PortSteering:        c.recv.caps().Steered,
	}
	if c.stats.buckets != nil {
		s.SentPerAddress = make([]uint64, len(c.stats.buckets))
		for i := range c.stats.buckets {
			s.SentPerAddress[i] = c.stats.buckets[i].Load()
		}
	}
	if c.stats.ports != nil {
		s.SentPerPort = make([]uint64, len(c.stats.ports))
		for i := range c.stats.ports {
			s.SentPerPort[i] = c.stats.ports[i].Load()
		}
	}
	rc := c.recv.caps()
	s.GRO, s.BatchRead = rc.GRO, rc.Batch
	if dc, ok := c.recv.(dropCounter); ok {
		d := dc.drops()
		s.RecvTruncated, s.RecvBadChecksum = d.Truncated, d.BadChecksum
		s.RecvLinkDown, s.RecvRebound = d.LinkDown, d.Rebound
		s.RecvBadSource += d.BadSource
		s.RecvReassembled, s.RecvFragmentsDropped = d.Reassembled, d.FragmentsDropped
	}
	if c.host != nil {
		s.RecvTruncated += c.host.truncated.Load()
		if dc, ok := c.host.recv.(dropCounter); ok {
			s.RecvTruncated += dc.drops().Truncated
		}
	}
	return s
}
