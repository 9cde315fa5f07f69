package wireguard

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	wgconn "golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// sinkTUN is a TUN whose Write counts packets and keeps nothing.
type sinkTUN struct {
	tun.Device
	written int
}

func (s *sinkTUN) Write(bufs [][]byte, offset int) (int, error) {
	s.written += len(bufs)
	return len(bufs), nil
}

// observation is one call of the TUN wrapper's observe.
type observation struct {
	info conn.RecvInfo
	flow conn.Flow
}

// observingTUN wraps a sink with b and records what reaches Observe.
func observingTUN(b *Bind) (*tunDevice, *sinkTUN, *[]observation) {
	sink := new(sinkTUN)
	td := WrapTUN(sink, b).(*tunDevice)
	seen := new([]observation)
	td.observed = func(info conn.RecvInfo, f conn.Flow) {
		*seen = append(*seen, observation{info, f})
	}
	return td, sink, seen
}

// sealedFake is a transport datagram as the Bind receives it, laid out so
// that "decrypting in place" is the identity: the 16-byte header, the
// inner packet padded to 16 bytes, a 16-byte tag.
func sealedFake(inner []byte) []byte {
	d := make([]byte, transportOverhead+(len(inner)+15)&^15)
	binary.LittleEndian.PutUint32(d, messageTransportType)
	copy(d[transportHeaderSize:], inner)
	return d
}

// TestReceiveObserves sends transport datagrams from the peer into the
// Bind's receive function and writes their plaintexts to the wrapped TUN
// as wireguard-go does (from the buffer receive filled, at offset 16):
// each reaches Observe once, with the read's RecvInfo and the packet's
// flow; a packet in a buffer the Bind never read into, a second write of
// the same buffer, and a plaintext too short for its datagram reach it
// not at all.
func TestReceiveObserves(t *testing.T) {
	b, receive, peer, peerConn, _ := loopbackBind(t, false)
	td, sink, seen := observingTUN(b)
	to := netip.MustParseAddrPort("[::1]:40000")
	inners := [][]byte{
		innerUDP(innerB, innerA, 5000, 9000, flowaddr.NotECT, "first flow"),
		innerUDP(innerB, innerA, 5001, 9000, flowaddr.ECT0, "second flow, a little longer"),
		innerUDP(innerB, innerA, 5002, 9000, flowaddr.NotECT, "third"),
	}
	for _, p := range inners {
		if _, err := peerConn.WriteToUDPAddrPort(sealedFake(p), to); err != nil {
			t.Fatal(err)
		}
	}
	// A handshake-sized datagram that is no transport data: no record.
	if _, err := peerConn.WriteToUDPAddrPort(make([]byte, device.MessageInitiationSize), to); err != nil {
		t.Fatal(err)
	}

	msgs := make([]*message, 8)
	bufs := make([][]byte, len(msgs))
	for i := range msgs {
		msgs[i] = new(message)
		bufs[i] = msgs[i][:]
	}
	sizes := make([]int, len(bufs))
	eps := make([]wgconn.Endpoint, len(bufs))
	var got [][]byte // the plaintext slices, as wireguard-go writes them
	for len(got) < len(inners)+1 {
		n, err := receive(bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if sizes[i] == 0 {
				continue
			}
			if binary.LittleEndian.Uint32(bufs[i]) != messageTransportType {
				got = append(got, nil)
				continue
			}
			plen := len(inners[len(got)])
			got = append(got, msgs[i][:transportHeaderSize+plen])
			// wireguard-go gets a fresh buffer for the slot it keeps.
			msgs[i] = new(message)
			bufs[i] = msgs[i][:]
		}
	}
	got = got[:len(inners)]

	c := b.Conn()
	want := conn.RecvInfo{Peer: peer, OuterSrc: peer, OuterDst: to}
	for i, buf := range got {
		if _, err := td.Write([][]byte{buf}, transportHeaderSize); err != nil {
			t.Fatal(err)
		}
		if len(*seen) != i+1 {
			t.Fatalf("packet %d: %d calls of Observe, want %d", i, len(*seen), i+1)
		}
		o := (*seen)[i]
		if o.info != want {
			t.Errorf("packet %d: Observe got %+v, want %+v", i, o.info, want)
		}
		if f := c.Classify(inners[i]); o.flow != f || !f.Valid {
			t.Errorf("packet %d: Observe got flow %+v, want %+v", i, o.flow, f)
		}
	}

	// Each record serves one packet.
	if _, err := td.Write([][]byte{got[0]}, transportHeaderSize); err != nil {
		t.Fatal(err)
	}
	// A packet from a buffer the Bind never read into.
	foreign := new(message)
	copy(foreign[transportHeaderSize:], inners[1])
	if _, err := td.Write([][]byte{foreign[:transportHeaderSize+len(inners[1])]}, transportHeaderSize); err != nil {
		t.Fatal(err)
	}
	if len(*seen) != len(inners) {
		t.Errorf("%d calls of Observe after writing a consumed and a foreign buffer, want %d", len(*seen), len(inners))
	}
	if sink.written != len(inners)+2 {
		t.Errorf("the TUN got %d packets, want all %d", sink.written, len(inners)+2)
	}
	if s := b.Stats(); s.Observed != uint64(len(inners)) || s.RecvUnmatched != 2 {
		t.Errorf("Stats: Observed %d, RecvUnmatched %d; want %d, 2", s.Observed, s.RecvUnmatched, len(inners))
	}
}

// TestTakeReceived checks the match between a receive record and the
// plaintext wireguard-go writes: at offset 16 of the buffer receive
// filled, at most as long as the ciphertext and at most a padding
// shorter.
func TestTakeReceived(t *testing.T) {
	peer := newEndpoint(netip.MustParseAddrPort("[2001:db8:ff::2]:51820"))
	src := netip.MustParseAddrPort("[2001:db8:b::17]:51820")
	dst := netip.MustParseAddrPort("192.0.2.1:51821")
	tests := []struct {
		name     string
		datagram int // recorded datagram length; 0: none
		plen     int // decrypted, trimmed plaintext
		offset   int // where Write says the plaintext is
		ok       bool
	}{
		{"exact", transportOverhead + 96, 96, 16, true},
		{"trimmed padding", transportOverhead + 112, 100, 16, true},
		{"longer than the datagram", transportOverhead + 96, 100, 16, false},
		{"far shorter: another datagram", transportOverhead + 1024, 100, 16, false},
		{"no record", 0, 100, 16, false},
		{"plaintext elsewhere than after the header", transportOverhead + 96, 96, 32, false},
		{"offset inside the header", transportOverhead + 96, 96, 8, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBind(conn.Config{})
			m := new(message)
			if tt.datagram > 0 {
				b.received.store(sendKey(m[:]), peer, &conn.Message{N: tt.datagram, OuterSrc: src, OuterDst: dst, ECN: flowaddr.CE})
			}
			info, ok := b.takeReceived(m[:tt.offset+tt.plen], tt.offset)
			if ok != tt.ok {
				t.Fatalf("takeReceived = %v, want %v", ok, tt.ok)
			}
			want := conn.RecvInfo{Peer: peer.addr, OuterSrc: src, OuterDst: dst, ECN: flowaddr.CE}
			if ok && info != want {
				t.Errorf("takeReceived = %+v, want %+v", info, want)
			}
			if _, ok := b.takeReceived(m[:tt.offset+tt.plen], tt.offset); ok {
				t.Errorf("a record was taken twice")
			}
		})
	}
}

// TestReceivedTableBounded checks that the receive records take a fixed
// amount of memory however many datagrams arrive and are never written
// to the TUN (wireguard-go drops forgeries and replays): one 64-byte slot
// per table entry, and at most one record per slot.
func TestReceivedTableBounded(t *testing.T) {
	if size, want := unsafe.Sizeof(receivedTable{}), uintptr(64<<tableBits+64); size > want {
		t.Errorf("receivedTable is %d bytes, want at most %d", size, want)
	}
	var tb receivedTable
	ep := newEndpoint(netip.MustParseAddrPort("[2001:db8:ff::2]:51820"))
	m := &conn.Message{N: 100}
	bufs := make([]message, 4)
	const n = 3 << tableBits
	for i := range n {
		// Keys as wireguard-go's buffers give: 64 KiB apart, many of
		// them; the arrays here stand for the first few.
		tb.store(sendKey(bufs[i%len(bufs)][:])+uintptr(i/len(bufs))<<16, ep, m)
	}
	kept := 0
	for i := range n {
		if _, _, ok := tb.take(sendKey(bufs[i%len(bufs)][:]) + uintptr(i/len(bufs))<<16); ok {
			kept++
		}
	}
	t.Logf("%d of %d records kept", kept, n)
	if kept > 1<<tableBits || kept == 0 {
		t.Errorf("%d records kept after %d stores; want 1 to %d", kept, n, 1<<tableBits)
	}
}

// TestWriteObserveDoesNotAllocate guards the receive path's added cost:
// the record at receive and its lookup, Classify and Observe at Write.
func TestWriteObserveDoesNotAllocate(t *testing.T) {
	b, _, peer, _, _ := loopbackBind(t, false)
	td := WrapTUN(new(sinkTUN), b)
	ep := b.endpoint(peer, true)
	inner := innerUDP(innerB, innerA, 5000, 9000, flowaddr.NotECT, "payload")
	m := new(message)
	d := sealedFake(inner)
	copy(m[:], d)
	msg := &conn.Message{N: len(d), Peer: peer, OuterSrc: peer, OuterDst: netip.MustParseAddrPort("[::1]:40000")}
	bufs := [][]byte{m[:transportHeaderSize+len(inner)]}
	allocs := testing.AllocsPerRun(100, func() {
		b.received.store(sendKey(m[:]), ep, msg)
		if _, err := td.Write(bufs, transportHeaderSize); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("record, Write and Observe allocate %v times per packet, want 0", allocs)
	}
	if s := b.Stats(); s.Observed == 0 {
		t.Errorf("no packet was observed: the test measured nothing")
	}
}

// BenchmarkReceiveRecord measures what the receive side adds per packet,
// over 256 buffers as a busy device keeps in flight. "ecn" is the path
// before path learning (a 16-byte record of the outer ECN and length at
// receive, looked up at Write); "record" the record of the whole
// RecvInfo, stored and taken; "classify" and "observe" the two calls
// Write adds, on a datagram that arrived on its flow's spread pair from
// a peer that is not Open (the case that learns); "write" all of it, the
// wrapped TUN's Write of one packet (into a sink) with its record stored
// before, as receive stores it.
func BenchmarkReceiveRecord(b *testing.B) {
	bd, _, _, _, ep, ma, mb := staleSetup(b)
	bd.RemovePeer(ep.AddrPort())
	if err := bd.SetPeer(conn.Peer{Addr: ep.AddrPort(), Range: conn.Range{Prefix: prefixB}}); err != nil {
		b.Fatal(err)
	}
	c := bd.Conn()
	sink := new(sinkTUN)
	td := WrapTUN(sink, bd)
	inner := innerUDP(innerB, innerA, 5000, 9000, flowaddr.NotECT, string(make([]byte, 1200)))
	f := c.Classify(inner)
	msgs := make([]*message, 256)
	bufs := make([][][]byte, len(msgs))
	d := sealedFake(inner)
	for i := range msgs {
		msgs[i] = new(message)
		copy(msgs[i][:], d)
		bufs[i] = [][]byte{msgs[i][:transportHeaderSize+len(inner)]}
	}
	msg := &conn.Message{N: len(d), Peer: ep.AddrPort(),
		OuterSrc: netip.AddrPortFrom(mb.Addr(f.Hash), ep.AddrPort().Port()),
		OuterDst: netip.AddrPortFrom(ma.Addr(f.Hash), 51820)}
	info := conn.RecvInfo{Peer: msg.Peer, OuterSrc: msg.OuterSrc, OuterDst: msg.OuterDst}
	b.Run("ecn", func(b *testing.B) {
		var ecns bufferTable
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m := msgs[i%len(msgs)]
			ecns.store(bufferKey(m[:]), 0, uint32(msg.N)<<8|uint32(msg.ECN&3)<<1|1)
			_, meta, ok := ecns.load(bufferKey(bufs[i%len(bufs)][0]))
			if ct := int(meta>>8) - transportOverhead; !ok || len(inner) > ct || len(inner) < ct-maxPadding {
				b.Fatal("no match")
			}
		}
	})
	b.Run("record", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m := msgs[i%len(msgs)]
			bd.received.store(sendKey(m[:]), ep, msg)
			if _, ok := bd.takeReceived(bufs[i%len(bufs)][0], transportHeaderSize); !ok {
				b.Fatal("no match")
			}
		}
	})
	b.Run("classify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Classify(inner)
		}
	})
	b.Run("observe", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Observe(&info, f)
		}
		// Opened once (by the first run): the datagram matches its
		// flow's spread pair, so each call reaches the slot.
		if c.Stats().PathsOpened == 0 {
			b.Fatal("the datagram opened no path: the benchmark measured the early return")
		}
	})
	b.Run("write", func(b *testing.B) {
		b.ReportAllocs()
		before := bd.Stats().Observed
		for i := 0; b.Loop(); i++ {
			m := msgs[i%len(msgs)]
			bd.received.store(sendKey(m[:]), ep, msg)
			td.Write(bufs[i%len(bufs)], transportHeaderSize)
		}
		if bd.Stats().Observed == before {
			b.Fatal("nothing observed")
		}
	})
}
