package wireguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
	wgconn "golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// WireGuard message layout (the WireGuard paper, section 5.4): a
// little-endian type word, and for transport data a 16-byte header, the
// ciphertext padded to 16 bytes, and a 16-byte Poly1305 tag. wireguard-go's
// own constants, so the checks follow it.
const (
	messageTransportType = device.MessageTransportType
	transportHeaderSize  = device.MessageTransportHeaderSize
	transportOverhead    = device.MessageTransportSize // header and tag: a keepalive
	maxPadding           = device.PaddingMultiple - 1
)

// batchSize is the number of datagrams per Send and per receive call,
// wireguard-go's own ideal batch.
const batchSize = wgconn.IdealBatchSize

var (
	// ErrMarkUnsupported is returned by [Bind.SetMark] for a nonzero mark:
	// the conn's socket does not take SO_MARK.
	ErrMarkUnsupported = errors.New("wireguard: the flowspread bind does not support fwmark; remove fwmark from the configuration")
)

// Bind is a wireguard-go [wgconn.Bind] that sends through a
// [conn.FlowSpreadConn]: each transport datagram leaves from the outer
// address pair of the inner flow that [WrapTUN]'s Read saw in the same
// buffer, and every datagram read from a peer reports the peer's one
// canonical [Endpoint].
//
// Its methods are safe for concurrent use, as wireguard-go needs.
type Bind struct {
	cfg conn.Config
	// listen opens the conn; tests replace it to open in a namespace.
	listen func(conn.Config) (*conn.FlowSpreadConn, error)

	mu sync.Mutex
	c  atomic.Pointer[conn.FlowSpreadConn]

	// endpoints holds the Endpoints that ParseEndpoint made (the
	// configuration's); strangers, those of datagrams from sources that
	// are no peer's, which anyone can send, so it is bounded.
	epMu      sync.RWMutex
	endpoints map[netip.AddrPort]*Endpoint
	strangers map[netip.AddrPort]*Endpoint

	flows    bufferTable   // send: the flow of each packet read from the TUN, by where its datagram starts
	received receivedTable // receive: what the conn read into each buffer, by its start

	msgPool sync.Pool // *[]conn.Message for Send

	sentSpread, sentControl, sentUnmatched atomic.Uint64
	ceMarked, ceDropped, recvUnmatched     atomic.Uint64
	observed                               atomic.Uint64
}

var _ wgconn.Bind = (*Bind)(nil)

// NewBind returns a Bind that opens a [conn.FlowSpreadConn] with cfg each
// time wireguard-go opens it (at device up and on port changes), on the
// port wireguard-go asks for, or cfg.Port when that is zero.
//
// Each peer that spreads must be in cfg.Peers, with its canonical address
// as the peer's endpoint in the wireguard-go configuration. The Bind sets
// cfg.AcceptUnknown: WireGuard authenticates every datagram, so datagrams
// from other sources are handed to wireguard-go with their own address,
// and a peer that moves is followed (see the package doc on roaming).
// It also sets cfg.Probe: a probe copy repeats a datagram's counter, and
// WireGuard's replay filter delivers only the first of the two to arrive
// (see the package doc on firewalls).
func NewBind(cfg conn.Config) *Bind {
	cfg.AcceptUnknown = true
	cfg.Probe = true
	return &Bind{cfg: cfg, listen: conn.Listen}
}

// Conn returns the conn the Bind sends through, or nil while it is closed.
func (b *Bind) Conn() *conn.FlowSpreadConn { return b.c.Load() }

// Open opens the conn and returns one receive
// function and the bound port.
func (b *Bind) Open(port uint16) ([]wgconn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c.Load()
	if c != nil {
		return nil, 0, wgconn.ErrBindAlreadyOpen
	}
	cfg := b.cfg
	if port != 0 {
		cfg.Port = port
	}
	c, err := b.listen(cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("wireguard: open the flowspread conn: %w", err)
	}
	b.c.Store(c)
	var actual uint16
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		actual = uint16(a.Port)
	}
	r := &receiver{b: b, c: c, msgs: make([]conn.Message, batchSize)}
	return []wgconn.ReceiveFunc{r.receive}, actual, nil
}

// Close closes the conn; the receive functions then return an error that
// wraps [net.ErrClosed].
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c.Swap(nil)
	if c == nil {
		return nil
	}
	return c.Close()
}

// SetMark accepts only 0: the conn does not set SO_MARK.
func (b *Bind) SetMark(mark uint32) error {
	if mark != 0 {
		return ErrMarkUnsupported
	}
	return nil
}

// BatchSize returns wireguard-go's ideal batch size.
func (b *Bind) BatchSize() int { return batchSize }

// ParseEndpoint parses "address:port" into the peer's Endpoint. It returns
// the same *Endpoint for the same address every time.
func (b *Bind) ParseEndpoint(s string) (wgconn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("wireguard: endpoint %q: %w", s, err)
	}
	return b.endpoint(ap, true), nil
}

// maxStrangers bounds the Endpoints kept for sources that are no peer's:
// anyone can send from any address, and before wireguard-go authenticates
// a datagram its Endpoint is already made. Past the bound the cache
// starts afresh; an Endpoint wireguard-go holds stays valid.
const maxStrangers = 4096

// endpoint returns the one Endpoint of ap, making it on first use, among
// the configuration's (configured) or the strangers'; the lookup of a
// known address does not allocate.
func (b *Bind) endpoint(ap netip.AddrPort, configured bool) *Endpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	b.epMu.RLock()
	e := b.endpoints[ap]
	if e == nil && !configured {
		e = b.strangers[ap]
	}
	b.epMu.RUnlock()
	if e != nil {
		return e
	}
	b.epMu.Lock()
	defer b.epMu.Unlock()
	if e = b.endpoints[ap]; e != nil {
		return e
	}
	if configured {
		if b.endpoints == nil {
			b.endpoints = make(map[netip.AddrPort]*Endpoint)
		}
		e = b.strangers[ap]
		if e == nil {
			e = newEndpoint(ap)
		}
		b.endpoints[ap] = e
		delete(b.strangers, ap)
		return e
	}
	if e = b.strangers[ap]; e == nil {
		if b.strangers == nil || len(b.strangers) >= maxStrangers {
			b.strangers = make(map[netip.AddrPort]*Endpoint)
		}
		e = newEndpoint(ap)
		b.strangers[ap] = e
	}
	return e
}

// Send sends each buffer to the endpoint's peer. A transport-data datagram
// that starts where [WrapTUN]'s Read put a classified packet's transport
// header, and is exactly as long as that packet seals to, goes out with
// the packet's outer address pair and ECN codepoint; the record is then
// forgotten, so it serves one datagram. Handshakes, cookie replies,
// keepalives, and data that cannot be matched go out unspread, to the
// peer's canonical address. The peer always comes from ep, never from the
// match, so a wrong match could only pick another address pair of the
// same peer.
//
// It does not retain bufs and does not allocate once warm.
func (b *Bind) Send(bufs [][]byte, ep wgconn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return wgconn.ErrWrongEndpointType
	}
	c := b.c.Load()
	if c == nil {
		return net.ErrClosed
	}
	mp, _ := b.msgPool.Get().(*[]conn.Message)
	if mp == nil {
		m := make([]conn.Message, batchSize)
		mp = &m
	}
	defer b.msgPool.Put(mp)
	var spread, control, unmatched uint64
	for len(bufs) > 0 {
		msgs := (*mp)[:min(len(bufs), len(*mp))]
		for i := range msgs {
			f, kind := b.flowOf(bufs[i])
			switch kind {
			case sendSpread:
				spread++
			case sendControl:
				control++
			default:
				unmatched++
			}
			msgs[i] = conn.Message{Buf: bufs[i], Peer: e.addr, Flow: f}
		}
		for sent := 0; sent < len(msgs); {
			n, err := c.WriteBatch(msgs[sent:])
			if err != nil {
				clear(msgs)
				return err
			}
			sent += n
		}
		bufs = bufs[len(msgs):]
		clear(msgs)
	}
	b.sentSpread.Add(spread)
	b.sentControl.Add(control)
	b.sentUnmatched.Add(unmatched)
	return nil
}

type sendKind uint8

const (
	sendSpread sendKind = iota
	sendControl
	sendUnmatched
)

// flowOf returns the flow recorded for a datagram's buffer and forgets
// the record, whatever the datagram is: a record serves one send. It
// returns the flow only for transport data that the record proves to be
// the packet Read classified: the datagram starts where the record says
// wireguard-go seals the packet (the record's key) and is exactly as long
// as the packet seals to. Anything else is sent unspread: a buffer that
// was read into for one packet and then carries another's ciphertext
// must not lend it the first packet's address pair and ECN.
func (b *Bind) flowOf(buf []byte) (conn.Flow, sendKind) {
	hash, meta, ok := b.flows.take(sendKey(buf))
	if len(buf) <= transportOverhead || binary.LittleEndian.Uint32(buf) != messageTransportType {
		return conn.Flow{}, sendControl // handshakes, cookie replies, keepalives
	}
	if !ok || int(meta>>8) != len(buf) {
		return conn.Flow{}, sendUnmatched
	}
	return conn.Flow{Hash: hash, ECN: flowaddr.ECN(meta>>1) & 3, Valid: meta&1 != 0}, sendSpread
}

// sendKey identifies a datagram by the address of its first byte.
func sendKey(buf []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
}

// recordFlow remembers the flow of the plaintext packet that a TUN read
// put at buf[offset:offset+plen], under the address where its datagram
// will start: wireguard-go seals the packet in place, writing the
// transport header right in front of the plaintext (device/send.go,
// RoutineEncryption). With the record goes the datagram's exact length:
// the header, the plaintext padded as wireguard-go pads it at mtu, and
// the tag. A packet that cannot be sealed in place gets no record.
func (b *Bind) recordFlow(buf []byte, offset, plen int, f conn.Flow, mtu int) {
	start := offset - transportHeaderSize
	n := sealedLen(plen, mtu)
	if start < 0 || offset > len(buf) || plen < 0 || start+n > cap(buf) || n >= 1<<24 {
		return
	}
	meta := uint32(n)<<8 | uint32(f.ECN&3)<<1
	if f.Valid {
		meta |= 1
	}
	b.flows.store(sendKey(buf[start:]), f.Hash, meta)
}

// sealedLen returns the length of the transport datagram that
// wireguard-go makes of a plaintext of plen bytes on a TUN of the given
// MTU: calculatePaddingSize in device/send.go pads the last MTU-sized
// unit to a multiple of 16 but never past the MTU.
func sealedLen(plen, mtu int) int {
	last := plen
	if mtu > 0 && last > mtu {
		last %= mtu
	}
	padded := (last + device.PaddingMultiple - 1) &^ (device.PaddingMultiple - 1)
	if mtu > 0 && padded > mtu {
		padded = mtu
	}
	return transportOverhead + plen - last + padded
}

// receiver is one receive function's state: a Message per buffer, reused.
type receiver struct {
	b    *Bind
	c    *conn.FlowSpreadConn
	msgs []conn.Message
}

// receive reads a batch with the conn into wireguard-go's buffers, reports
// each datagram's peer as its canonical Endpoint, and records what the
// conn read about each transport datagram (its [conn.RecvInfo]) under its
// buffer, for the TUN's Write.
//
// wireguard-go stops receiving for good on the first error that is not
// temporary, so the conn returns none for a link that goes down or is
// re-created: its reads wait for the link instead.
//
// The conn may reorder its messages to drop datagrams from strangers; it
// keeps the order of those it returns, so each returned buffer is found
// at or after the previous one in packets. Slots it dropped get size 0,
// which wireguard-go skips.
func (r *receiver) receive(packets [][]byte, sizes []int, eps []wgconn.Endpoint) (int, error) {
	msgs := r.msgs[:min(len(packets), len(r.msgs))]
	for i := range msgs {
		msgs[i] = conn.Message{Buf: packets[i]}
	}
	n, err := r.c.ReadBatch(msgs)
	if err != nil {
		return 0, err
	}
	j := 0
	for i := 0; i < n; i++ {
		m := &msgs[i]
		p := unsafe.SliceData(m.Buf)
		for j < len(msgs) && unsafe.SliceData(packets[j]) != p {
			sizes[j] = 0
			j++
		}
		if j == len(msgs) {
			break // cannot happen: the conn keeps the caller's buffers
		}
		sizes[j] = m.N
		eps[j] = r.b.endpoint(m.Peer, false)
		// Only transport data with content reaches the TUN's Write. A
		// buffer filled with anything else loses any record an earlier
		// fill left (a forgery wireguard-go dropped), so that a record
		// always describes its buffer's latest datagram.
		key := sendKey(packets[j])
		if m.N > transportOverhead && binary.LittleEndian.Uint32(m.Buf) == messageTransportType {
			r.b.received.store(key, eps[j].(*Endpoint), m)
		} else {
			r.b.received.forget(key)
		}
		j++
	}
	return j, nil
}

// takeReceived returns what the conn's read said about the datagram
// whose plaintext wireguard-go writes to the TUN at buf[offset:], and
// forgets it: wireguard-go decrypts in place, so the datagram began
// transportHeaderSize bytes before the plaintext, in the buffer the
// receive function filled. The record must also fit the plaintext's
// length: wireguard-go trims the padding off, down to the inner IP
// header's length, so the plaintext is at most the ciphertext's length
// and at most maxPadding shorter. Anything else (no record, another
// datagram's) misses.
func (b *Bind) takeReceived(buf []byte, offset int) (conn.RecvInfo, bool) {
	if offset < transportHeaderSize || offset > len(buf) {
		return conn.RecvInfo{}, false
	}
	info, n, ok := b.received.take(sendKey(buf[offset-transportHeaderSize:]))
	if !ok {
		return conn.RecvInfo{}, false
	}
	plen, ct := len(buf)-offset, n-transportOverhead
	if plen > ct || plen < ct-maxPadding {
		return conn.RecvInfo{}, false
	}
	return info, true
}

// Endpoint is a peer's canonical address: the one endpoint that every
// datagram from the peer reports, whichever outer address of the peer's
// range it came from, so wireguard-go's roaming does not flap between
// them. A datagram from a source that is no peer's reports an Endpoint
// of that plain address, which wireguard-go roams to once the datagram
// authenticates. Make it with [Bind.ParseEndpoint].
type Endpoint struct {
	addr  netip.AddrPort
	bytes []byte
}

var _ wgconn.Endpoint = (*Endpoint)(nil)

func newEndpoint(ap netip.AddrPort) *Endpoint {
	b, _ := ap.MarshalBinary()
	return &Endpoint{addr: ap, bytes: b}
}

// AddrPort returns the peer's canonical address.
func (e *Endpoint) AddrPort() netip.AddrPort { return e.addr }

// ClearSrc does nothing: the conn picks the source address per flow.
func (e *Endpoint) ClearSrc() {}

// SrcToString returns "": the source address depends on the flow.
func (e *Endpoint) SrcToString() string { return "" }

// DstToString returns the canonical address.
func (e *Endpoint) DstToString() string { return e.addr.String() }

// DstToBytes returns the canonical address in binary, for cookie MACs.
func (e *Endpoint) DstToBytes() []byte { return e.bytes }

// DstIP returns the canonical address's IP.
func (e *Endpoint) DstIP() netip.Addr { return e.addr.Addr() }

// SrcIP returns the zero Addr: the source address depends on the flow.
func (e *Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// Stats counts what the Bind and the wrapped TUN matched.
type Stats struct {
	// SentSpread counts transport-data datagrams (WireGuard message type
	// 4) handed to the conn with the flow that [WrapTUN]'s Read
	// classified for them (the conn puts each on its flow's spread pair
	// once that is known open, else on the canonical pair, counted in the
	// conn's Stats.SentWaiting);
	// SentControl, handshakes and cookie replies (types 1 to 3) and
	// keepalives (empty transport data), which carry no inner flow and go
	// out unspread by design; SentUnmatched, transport-data datagrams that
	// could not be proven to be a packet Read classified (no record, or
	// one for another length: see [Bind.Send]), sent unspread. With
	// today's wireguard-go SentUnmatched stays 0 but for packets read
	// before the Bind opened and rare table collisions.
	SentSpread, SentControl, SentUnmatched uint64
	// CEMarked counts inner packets marked CE from the outer header;
	// CEDropped, Not-ECT inner packets dropped for an outer CE (RFC 6040);
	// RecvUnmatched, inner packets written to the TUN whose buffer had no
	// record of the datagram the Bind's receive read into it (written
	// unmarked, and not observed).
	CEMarked, CEDropped, RecvUnmatched uint64
	// Observed counts inner packets reported to the conn's
	// [conn.FlowSpreadConn.Observe]: every packet written to the TUN
	// whose buffer had a record.
	Observed uint64
}

// Stats returns a snapshot of the counters.
func (b *Bind) Stats() Stats {
	return Stats{
		SentSpread: b.sentSpread.Load(), SentControl: b.sentControl.Load(), SentUnmatched: b.sentUnmatched.Load(),
		CEMarked: b.ceMarked.Load(), CEDropped: b.ceDropped.Load(), RecvUnmatched: b.recvUnmatched.Load(),
		Observed: b.observed.Load(),
	}
}
