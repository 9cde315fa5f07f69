package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/host"
	"github.com/flowspread/flowspread/hash"
)

// spreadMode says which outer addresses a tunnel end spreads.
type spreadMode uint8

const (
	// spreadOff: no prefixes; every datagram is one outer flow between
	// the two canonical addresses.
	spreadOff spreadMode = iota
	// spreadSrc: we spread our sources over our prefix and send to the
	// peer's canonical address. The peer must run spreadDst with our
	// prefix, to accept them.
	spreadSrc
	// spreadDst: we have one address and spread our destinations over
	// the peer's prefix; the peer runs spreadSrc.
	spreadDst
	// spreadBoth: both ends have a prefix; each flow gets a source in
	// ours and a destination in the peer's.
	spreadBoth
)

var spreadNames = [...]string{"off", "src", "dst", "both"}

func (m spreadMode) String() string { return spreadNames[m] }

func (m spreadMode) ourPrefix() bool  { return m == spreadSrc || m == spreadBoth }
func (m spreadMode) peerPrefix() bool { return m == spreadDst || m == spreadBoth }

// config is one tunnel end, as the flags give it.
type config struct {
	name       string         // TUN interface name
	listenPort uint16         // our UDP port
	peer       netip.AddrPort // the peer's canonical outer address
	self       netip.AddrPort // ours; zero: the route's source to the peer, listenPort
	nat        bool           // self is a NAT's address, not this host's: checkSelf skips it
	// ours and theirs are our widened endpoint and the peer's (-range,
	// -peer-range, and the -prefix shorthands).
	ours, theirs conn.Range
	spread       spreadMode
	psk          [PSKSize]byte
	hashKey      hash.Key
	symmetric    bool
	addrs        []netip.Prefix // inner addresses of the TUN
	routes       []netip.Prefix // inner routes through the TUN
	mtu          int
	localRoute   bool // install the AnyIP local route for prefix
	batch        int
	flowLabel    bool
	gso          bool
	// open declares the peer's whole range reachable (conn.Peer.Open):
	// flows go on their spread pairs at once instead of being learned.
	open bool
	// keepalive is the persistent keepalive interval; 0 is off.
	keepalive time.Duration
}

// connConfig is the FlowSpreadConn the tunnel end runs on.
func (cfg *config) connConfig() conn.Config {
	c := conn.Config{
		Port:       cfg.listenPort,
		Key:        cfg.hashKey,
		Symmetric:  cfg.symmetric,
		FlowLabel:  cfg.flowLabel,
		DisableGSO: !cfg.gso,
		// The probes are copies of datagrams already sent on the
		// canonical pair; the peer's replay window drops whichever copy
		// comes second (replayWindow.check, before any decryption).
		Probe: true,
	}
	peer := conn.Peer{Addr: cfg.peer, Open: cfg.open}
	if cfg.spread.ourPrefix() {
		c.Range = cfg.ours
	}
	if cfg.spread.peerPrefix() {
		peer.Range = cfg.theirs
	}
	c.Peers = []conn.Peer{peer}
	return c
}

// counters are the tunnel's own counts; the conn keeps the outer ones.
// They only grow, and are read while the tunnel runs.
type counters struct {
	tunPackets, tunBytes      atomic.Uint64
	sent, sendErrors          atomic.Uint64
	received                  atomic.Uint64
	delivered, deliveredBytes atomic.Uint64
	malformed, authFailed     atomic.Uint64
	replayed, tooOld          atomic.Uint64
	badInner, tunWriteErrors  atomic.Uint64
	readErrors, tooBig        atomic.Uint64
	keepalivesSent            atomic.Uint64
	keepalivesReceived        atomic.Uint64
}

// Stats is a snapshot of a tunnel end, written as JSON by -stats.
type Stats struct {
	// TunPackets and TunBytes: inner packets read from the TUN device.
	TunPackets uint64 `json:"tun_packets"`
	TunBytes   uint64 `json:"tun_bytes"`
	// Sent: datagrams handed to the conn; SendErrors, those it refused.
	Sent       uint64 `json:"sent"`
	SendErrors uint64 `json:"send_errors"`
	// Received: datagrams the conn read from the peer.
	Received uint64 `json:"received"`
	// Delivered: inner packets written to the TUN device.
	Delivered      uint64 `json:"delivered"`
	DeliveredBytes uint64 `json:"delivered_bytes"`
	// Dropped datagrams, by reason: too short or of an unknown type;
	// failed authentication (tampered, wrong key); counter seen already;
	// counter behind the replay window; authentic but not an IP packet.
	DroppedMalformed uint64 `json:"dropped_malformed"`
	DroppedAuth      uint64 `json:"dropped_auth"`
	DroppedReplay    uint64 `json:"dropped_replay"`
	DroppedTooOld    uint64 `json:"dropped_too_old"`
	DroppedBadInner  uint64 `json:"dropped_bad_inner"`
	TunWriteErrors   uint64 `json:"tun_write_errors"`
	ReadErrors       uint64 `json:"read_errors"`
	// TooBig: packets from the TUN device longer than -mtu.
	TooBig uint64 `json:"too_big"`
	// KeepalivesSent and KeepalivesReceived: authentic empty datagrams
	// (-keepalive), which carry no inner packet.
	KeepalivesSent     uint64 `json:"keepalives_sent"`
	KeepalivesReceived uint64 `json:"keepalives_received"`
	// AddressesUsed counts the addresses of our range that sent at least
	// one datagram (0 without source spreading).
	AddressesUsed int `json:"addresses_used"`
	// PortsUsed counts the ports of our range that sent at least one
	// datagram (0 without ports in -range).
	PortsUsed int `json:"ports_used"`
	// Conn is the conn's own snapshot: outer datagrams, GSO, per-address
	// counts, datagrams dropped before they reached the tunnel, and the
	// paths: datagrams sent waiting on the canonical pair, probe copies,
	// pairs that became known open (see the package doc).
	Conn conn.Stats `json:"conn"`
}

// tunnel is one end of a point-to-point tunnel: a TUN device on one side,
// a FlowSpreadConn to one peer on the other.
type tunnel struct {
	cfg         config
	self        netip.AddrPort
	tun         *tunDevice
	conn        *conn.FlowSpreadConn
	removeRoute func() error // nil: no local route of ours

	// sealMu guards seal, which the TUN reader and the keepalive share;
	// the TUN reader takes it once per batch, not per packet.
	sealMu sync.Mutex
	seal   *sealer
	// start and lastSend (time since start, in nanoseconds, of the last
	// datagram the conn took) tell the keepalive how long we were quiet;
	// the monotonic clock, as the wall clock may step.
	start    time.Time
	lastSend atomic.Int64
	// Owned by the keepalive goroutine: one empty datagram's buffer.
	keepaliveBuf []byte
	keepaliveMsg []conn.Message
	// Owned by the TUN reader goroutine.
	txFull  [][]byte // whole datagram buffers: header, packet, tag
	txBufs  [][]byte // where the TUN reads each packet: after the header
	txSizes []int
	txMsgs  []conn.Message
	txOrder []int       // sparseFirst's order of the batch
	txKeys  []uint64    // each kept packet's flow key, for sparseFirst
	txFlows []conn.Flow // each kept packet's flow
	txKept  []int       // the batch's packets that go out, by index
	// Owned by the network reader goroutine.
	open    *opener
	window  replayWindow
	rxMsgs  []conn.Message
	rxInner [][]byte // each datagram's inner packet, nil when dropped
	rxOrder []int
	rxFlows []uint64
	rxInfo  conn.RecvInfo // what Observe is told of each accepted datagram
	// observe is conn.Observe; tests watch the calls through it.
	observe func(*conn.RecvInfo, conn.Flow)
	// clock is the wall clock in nanoseconds, for seal.catchUp.
	clock func() uint64

	count     counters
	done      chan struct{} // closed by close
	closeOnce sync.Once
	closeErr  error
}

// rxBufLen holds any datagram: a peer with a larger MTU still gets through.
const rxBufLen = 1<<16 - 1

// openTunnel sets up a tunnel end: the TUN device with its addresses and
// routes, the local route for our prefix, and the conn. It acts in the
// network namespace of the calling thread, and needs CAP_NET_ADMIN.
// now is the wall clock in nanoseconds: the sender's first counter (see
// newSealer), and, less maxClockSkew, the oldest counter the receiver
// takes.
func openTunnel(cfg config, now uint64) (_ *tunnel, err error) {
	t := &tunnel{cfg: cfg, self: cfg.self, clock: wallClock, done: make(chan struct{}), start: time.Now()}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if !t.self.IsValid() {
		if t.self, err = selfAddr(cfg.peer, cfg.listenPort); err != nil {
			return nil, err
		}
	}
	if err := checkSelf(t.self, &cfg); err != nil {
		return nil, err
	}
	send, recv, err := directionKeys(cfg.psk, t.self, cfg.peer)
	if err != nil {
		return nil, err
	}
	if t.seal, err = newSealer(send, now); err != nil {
		return nil, err
	}
	if t.open, err = newOpener(recv); err != nil {
		return nil, err
	}
	// Whatever the peer sealed more than maxClockSkew before we started
	// is a replay: nothing we want came before our start.
	t.window = newReplayWindow(restartFloor(now))

	if t.tun, err = openTUN(cfg.name); err != nil {
		return nil, err
	}
	if err = t.tun.configure(cfg.mtu, cfg.addrs, cfg.routes); err != nil {
		return nil, err
	}
	if cfg.spread.ourPrefix() && cfg.ours.Prefix.IsValid() && cfg.localRoute {
		if t.removeRoute, err = host.AddLocalRoute(cfg.ours.Prefix); err != nil {
			return nil, fmt.Errorf("local route for %v: %w", cfg.ours.Prefix, err)
		}
	}
	if t.conn, err = conn.Listen(cfg.connConfig()); err != nil {
		return nil, err
	}
	t.observe = t.conn.Observe
	t.keepaliveBuf = make([]byte, overhead)
	t.keepaliveMsg = make([]conn.Message, 1)

	t.txFull = make([][]byte, cfg.batch)
	t.txBufs = make([][]byte, cfg.batch)
	t.txSizes = make([]int, cfg.batch)
	t.txMsgs = make([]conn.Message, cfg.batch)
	t.rxMsgs = make([]conn.Message, cfg.batch)
	t.txOrder, t.txKeys = make([]int, cfg.batch), make([]uint64, cfg.batch)
	t.txFlows, t.txKept = make([]conn.Flow, cfg.batch), make([]int, cfg.batch)
	t.rxInner, t.rxOrder, t.rxFlows = make([][]byte, cfg.batch), make([]int, cfg.batch), make([]uint64, cfg.batch)
	for i := range cfg.batch {
		// A read of one byte more than the MTU tells an oversized packet.
		t.txFull[i] = make([]byte, overhead+cfg.mtu+1)
		t.txBufs[i] = t.txFull[i][headerLen : headerLen+cfg.mtu+1]
		t.rxMsgs[i].Buf = make([]byte, rxBufLen)
	}
	return t, nil
}

// wallClock is the wall clock in nanoseconds: counters are compared
// across hosts, so the monotonic clock would not do. It does not allocate.
func wallClock() uint64 { return uint64(time.Now().UnixNano()) }

// checkSelf refuses a self that is not this host's own address and
// listening port, unless cfg.nat says a NAT maps us to it. It is the
// guard against two ends sealing with one key (see directionKeys): a
// command copied from the peer, or with -self and -peer swapped, names
// the peer's address as ours, which is not an address of this host.
//
// Ours is what the kernel delivers here: an address of an interface, or
// one inside a local route (AnyIP: ip -6 route add local PREFIX dev lo).
// The local route flowtun adds for -prefix is not there yet and does not
// count: a copied command would bring the peer's prefix along too.
func checkSelf(self netip.AddrPort, cfg *config) error {
	if cfg.nat {
		return nil
	}
	const hint = "did you swap -self and -peer, or copy the peer's command? -self is this end's own address and port, as the peer's -peer gives them (behind a NAT that rewrites them, add -nat)"
	if self.Port() != cfg.listenPort {
		return fmt.Errorf("-self %v has port %d, but we listen on %d (-listen-port): %s", self, self.Port(), cfg.listenPort, hint)
	}
	local, err := isLocalAddr(self.Addr())
	if err != nil {
		return fmt.Errorf("cannot tell whether -self %v is an address of this host: %w", self, err)
	}
	if !local {
		return fmt.Errorf("-self %v is not an address of this host: %s", self.Addr(), hint)
	}
	return nil
}

// selfAddr is our canonical outer address as the peer sees it, when
// nothing stands between us: the source address the kernel picks for the
// peer, and our port.
func selfAddr(peer netip.AddrPort, port uint16) (netip.AddrPort, error) {
	// Connecting a UDP socket sends nothing: it only looks up the route.
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(peer))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("no route to the peer %v to learn our own address (give it with -self): %w", peer, err)
	}
	defer c.Close()
	la := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(la.Addr().Unmap(), port), nil
}

// run moves packets both ways until ctx is done or a side fails for good,
// then closes the tunnel. It returns nil after ctx ends.
func (t *tunnel) run(ctx context.Context) error {
	errc := make(chan error, 3)
	go func() { errc <- t.tunToNet() }()
	go func() { errc <- t.netToTun() }()
	pending := 2
	if t.cfg.keepalive > 0 {
		go func() { errc <- t.keepalive(t.cfg.keepalive, newTunnelClock(t)) }()
		pending++
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	t.close()
	for ; pending > 0; pending-- {
		if e := <-errc; err == nil {
			err = e
		}
	}
	return err
}

// tunToNet reads inner packets from the TUN device in batches, seals each
// in place and sends the batch to the peer, each datagram on its flow's
// outer address pair, sparse flows first (sparseFirst): when a batch
// holds both, the sparse flows' packets are sealed and sent on their own
// before the rest are sealed. It does not allocate.
func (t *tunnel) tunToNet() error {
	for {
		n, err := t.tun.readBatch(t.txBufs, t.txSizes)
		if err != nil {
			if t.closed() {
				return nil
			}
			return fmt.Errorf("read from %s: %w", t.tun.name, err)
		}
		var bytes uint64
		kept := t.txKept[:0]
		for i := range n {
			size := t.txSizes[i]
			bytes += uint64(size)
			if size > t.cfg.mtu {
				// Only an MTU changed behind our back gets us this.
				t.count.tooBig.Add(1)
				continue
			}
			// Classify the plaintext before it turns into ciphertext.
			flow := t.conn.Classify(t.txBufs[i][:size])
			t.txFlows[len(kept)] = flow
			t.txKeys[len(kept)] = flowOrder(flow, len(kept))
			kept = append(kept, i)
		}
		t.count.tunPackets.Add(uint64(n))
		t.count.tunBytes.Add(bytes)
		order, singles := sparseFirst(t.txOrder, t.txKeys[:len(kept)])
		if singles > 0 && singles < len(order) {
			if err := t.sealAndSend(kept, order[:singles]); err != nil {
				return err
			}
			order = order[singles:]
		}
		if err := t.sealAndSend(kept, order); err != nil {
			return err
		}
	}
}

// sealAndSend seals the packets kept[j] for j in order, in place, and
// sends them in one batch.
func (t *tunnel) sealAndSend(kept, order []int) error {
	msgs := t.txMsgs[:0]
	t.sealMu.Lock()
	t.seal.catchUp(t.clock())
	for _, j := range order {
		i := kept[j]
		dgram, err := t.seal.seal(t.txFull[i], t.txSizes[i])
		if err != nil {
			t.sealMu.Unlock()
			return err
		}
		msgs = append(msgs, conn.Message{Buf: dgram, Peer: t.cfg.peer, Flow: t.txFlows[j]})
	}
	t.sealMu.Unlock()
	return t.send(msgs)
}

// send writes a batch, skipping datagrams the kernel refuses (a route
// gone for a moment, a full queue): a tunnel drops what it cannot send,
// as a link does. It returns an error only once the conn is closed.
func (t *tunnel) send(msgs []conn.Message) error {
	for len(msgs) > 0 {
		n, err := t.conn.WriteBatch(msgs)
		t.count.sent.Add(uint64(n))
		if n > 0 {
			t.lastSend.Store(int64(time.Since(t.start)))
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		t.count.sendErrors.Add(1)
		msgs = msgs[min(n+1, len(msgs)):]
	}
	return nil
}

// maxReadErrors is how many failed reads in a row end the tunnel: one is
// a transient error (an ICMP error reported on the socket), a run of them
// is a broken socket that would otherwise spin.
const maxReadErrors = 100

// netToTun reads datagrams from the peer in batches, drops those that are
// malformed, replayed or not authentic, and writes the inner packets to
// the TUN device, with the outer congestion marks (RFC 6040), sparse
// flows first (sparseFirst). It does not allocate.
//
// When the peer spreads, each inner flow has its own outer address pair,
// so the batch is ordered by it before anything is decrypted: a sparse
// flow's datagram is opened and delivered before the bulk flows' are
// opened. Without spreading every datagram has the same pair, and only
// the inner packets, once opened, tell the flows apart.
func (t *tunnel) netToTun() error {
	failures := 0
	for {
		for i := range t.rxMsgs {
			t.rxMsgs[i].Buf = t.rxMsgs[i].Buf[:cap(t.rxMsgs[i].Buf)]
		}
		n, err := t.conn.ReadBatch(t.rxMsgs)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			t.count.readErrors.Add(1)
			if failures++; failures >= maxReadErrors {
				return fmt.Errorf("read from the peer: %d errors in a row, the last: %w", failures, err)
			}
			continue
		}
		failures = 0
		t.count.received.Add(uint64(n))
		if t.cfg.spread != spreadOff {
			for i := range n {
				t.rxFlows[i] = outerPairKey(t.rxMsgs[i].OuterSrc, t.rxMsgs[i].OuterDst)
			}
			order, _ := sparseFirst(t.rxOrder, t.rxFlows[:n])
			for _, i := range order {
				inner, _, err := t.receive(&t.rxMsgs[i])
				if err != nil {
					t.countDrop(err)
				}
				if inner != nil && !t.deliver(inner) {
					return nil
				}
			}
			continue
		}
		for i := range n {
			inner, f, err := t.receive(&t.rxMsgs[i])
			if err != nil {
				t.countDrop(err)
			}
			t.rxInner[i] = inner
			t.rxFlows[i] = ^uint64(i)
			if inner != nil {
				t.rxFlows[i] = flowOrder(f, i)
			}
		}
		order, _ := sparseFirst(t.rxOrder, t.rxFlows[:n])
		for _, i := range order {
			if inner := t.rxInner[i]; inner != nil && !t.deliver(inner) {
				return nil
			}
		}
	}
}

// deliver writes an inner packet to the TUN device. It returns false once
// the tunnel is closed; a failed write is counted and the packet dropped.
func (t *tunnel) deliver(inner []byte) bool {
	if _, err := t.tun.write(inner); err != nil {
		if t.closed() {
			return false
		}
		t.countDrop(errTunWrite)
		return true
	}
	t.count.delivered.Add(1)
	t.count.deliveredBytes.Add(uint64(len(inner)))
	return true
}

// outerPairKey is the flow key sparseFirst orders a received datagram by
// when the peer spreads: its outer address pair and ports, folded into 64
// bits. Two pairs that fold alike are ordered as one flow, which keeps
// their order and costs nothing else.
func outerPairKey(src, dst netip.AddrPort) uint64 {
	s, d := src.Addr().As16(), dst.Addr().As16()
	k := binary.LittleEndian.Uint64(s[:8]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(s[8:]), 17) ^
		bits.RotateLeft64(binary.LittleEndian.Uint64(d[:8]), 31) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(d[8:]), 47) ^
		uint64(src.Port())<<48 ^ uint64(dst.Port())<<32
	return k
}

// flowOrder is the key sparseFirst orders packet i of a batch by: its
// flow hash, or, for a packet with no flow key, a value of its own.
func flowOrder(f conn.Flow, i int) uint64 {
	if !f.Valid {
		return ^uint64(i)
	}
	return f.Hash
}

// errTunWrite marks a failed write of an inner packet.
var errTunWrite = errors.New("write to the TUN device failed")

// receive checks and opens one datagram in place and returns its inner
// packet, ready for the TUN device, and its flow; nil when it is dropped,
// with an error that says why (none for a keepalive, or for an inner
// Not-ECT packet that arrived CE-marked, which RFC 6040 drops and the
// conn counts in Stats.DroppedECN). Every authentic datagram that is no
// replay, and only those, is reported to the conn's Observe, which learns
// from it which outer pairs the peer's flows arrive on.
func (t *tunnel) receive(m *conn.Message) ([]byte, conn.Flow, error) {
	dgram := m.Buf[:m.N]
	counter, err := parseHeader(dgram)
	if err != nil {
		return nil, conn.Flow{}, err
	}
	// The cheap check first, so a flood of replays costs no decryption.
	if err := t.window.check(counter); err != nil {
		return nil, conn.Flow{}, err
	}
	inner, err := t.open.open(dgram, counter)
	if err != nil {
		return nil, conn.Flow{}, err
	}
	// Only an authentic counter moves the window, and only an authentic
	// datagram moves where we send. A keepalive's flow is unclassified.
	t.window.accept(counter)
	f := t.conn.Classify(inner)
	t.rxInfo = m.RecvInfo() // with the peer the read found, so Observe need not look it up
	t.observe(&t.rxInfo, f)
	if len(inner) == 0 {
		t.count.keepalivesReceived.Add(1)
		return nil, f, nil
	}
	drop, err := t.conn.Decapsulate(inner, m.ECN)
	if err != nil {
		return nil, f, errBadInner
	}
	if drop {
		return nil, f, nil
	}
	return inner, f, nil
}

// errBadInner: an authentic datagram whose content is no IP packet.
var errBadInner = errors.New("authentic datagram without an IPv4 or IPv6 packet inside")

func (t *tunnel) countDrop(err error) {
	switch err {
	case errMalformed:
		t.count.malformed.Add(1)
	case errAuth:
		t.count.authFailed.Add(1)
	case errReplayed:
		t.count.replayed.Add(1)
	case errTooOld:
		t.count.tooOld.Add(1)
	case errBadInner:
		t.count.badInner.Add(1)
	case errTunWrite:
		t.count.tunWriteErrors.Add(1)
	}
}

// closed reports whether close has begun.
func (t *tunnel) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// close closes the conn and the TUN device, which ends run's goroutines,
// and removes the local route it added. It is safe to call more than once.
func (t *tunnel) close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		var errs []error
		if t.conn != nil {
			errs = append(errs, t.conn.Close())
		}
		if t.tun != nil {
			errs = append(errs, t.tun.Close())
		}
		if t.removeRoute != nil {
			if err := t.removeRoute(); err != nil {
				errs = append(errs, fmt.Errorf("remove the local route for %v: %w", t.cfg.ours.Prefix, err))
			}
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// stats returns a snapshot of the counters. It is safe to call while the
// tunnel runs, and after it closed.
func (t *tunnel) stats() Stats {
	c := &t.count
	s := Stats{
		TunPackets:         c.tunPackets.Load(),
		TunBytes:           c.tunBytes.Load(),
		Sent:               c.sent.Load(),
		SendErrors:         c.sendErrors.Load(),
		Received:           c.received.Load(),
		Delivered:          c.delivered.Load(),
		DeliveredBytes:     c.deliveredBytes.Load(),
		DroppedMalformed:   c.malformed.Load(),
		DroppedAuth:        c.authFailed.Load(),
		DroppedReplay:      c.replayed.Load(),
		DroppedTooOld:      c.tooOld.Load(),
		DroppedBadInner:    c.badInner.Load(),
		TunWriteErrors:     c.tunWriteErrors.Load(),
		ReadErrors:         c.readErrors.Load(),
		TooBig:             c.tooBig.Load(),
		KeepalivesSent:     c.keepalivesSent.Load(),
		KeepalivesReceived: c.keepalivesReceived.Load(),
	}
	if t.conn != nil {
		s.Conn = t.conn.Stats()
	}
	for _, n := range s.Conn.SentPerAddress {
		if n > 0 {
			s.AddressesUsed++
		}
	}
	for _, n := range s.Conn.SentPerPort {
		if n > 0 {
			s.PortsUsed++
		}
	}
	return s
}
