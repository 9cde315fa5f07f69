package conn_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowspread/flowspread/conn"
)

// TestPeersChangeUnderLoad streams datagrams of 64 flows from A to B,
// spread over both ranges, while B adds and removes other peers as fast
// as it can, and checks that B receives every datagram from A (a peer
// that stays) once and from its right peer: a table swap loses nothing in
// flight. The sender keeps at most a window in flight, so that no socket
// buffer overflows and a loss can only be the conn's. Run it with -race.
func TestPeersChangeUnderLoad(t *testing.T) {
	h := newRoutedHosts(t, true)
	h.a.Run(t, "ping", "-6", "-c", "1", "-W", "5", linkB.Addr().String())
	a := listenIn(t, h.a, conn.Config{Range: conn.Range{Prefix: prefixA}, Port: portA, Peers: []conn.Peer{{Addr: linkB, Range: conn.Range{Prefix: prefixB}, Open: true}}})
	b := listenIn(t, h.b, conn.Config{Range: conn.Range{Prefix: prefixB}, Port: portB, Peers: []conn.Peer{{Addr: linkA, Range: conn.Range{Prefix: prefixA}, Open: true}}})

	const total, window = 20000, 256
	var received atomic.Int64
	seen := make([]bool, total)
	readErr := make(chan error, 1)
	go func() {
		msgs := make([]conn.Message, 32)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 64)
		}
		for received.Load() < total {
			n, err := b.ReadBatch(msgs)
			if err != nil {
				readErr <- err
				return
			}
			for _, m := range msgs[:n] {
				seq := binary.BigEndian.Uint32(m.Buf)
				if m.Peer != linkA || m.N != 8 || seq >= total || seen[seq] {
					readErr <- fmt.Errorf("datagram %d of %d bytes from %v (%v): want each of A's once", seq, m.N, m.Peer, m.OuterSrc)
					return
				}
				seen[seq] = true
			}
			received.Add(int64(n))
		}
		readErr <- nil
	}()

	stop := make(chan struct{})
	var changes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the control plane: peers come and go
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			site := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xc0, byte(i % 64), 15: 1})
			p := conn.Peer{Addr: netip.AddrPortFrom(site, 51820), Range: conn.Range{Prefix: netip.PrefixFrom(site, 64).Masked()}}
			if err := b.SetPeer(p); err != nil {
				t.Errorf("SetPeer(%v): %v", p.Addr, err)
				return
			}
			if i%3 == 0 && !b.RemovePeer(p.Addr) {
				t.Errorf("RemovePeer(%v) found no peer", p.Addr)
				return
			}
			changes.Add(1)
		}
	}()

	msgs := make([]conn.Message, 16)
	for seq := 0; seq < total; {
		if int64(seq)-received.Load() > window {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		n := min(len(msgs), total-seq)
		for i := range n {
			buf := binary.BigEndian.AppendUint32(nil, uint32(seq+i))
			buf = append(buf, 0, 0, 0, 0)
			msgs[i] = conn.Message{Buf: buf, Peer: linkB, Flow: conn.Flow{Hash: uint64((seq+i)%64)<<58 | 1, Valid: true}}
		}
		sent, err := a.WriteBatch(msgs[:n])
		if err != nil {
			t.Fatal(err)
		}
		seq += sent
	}
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("B received %d of %d datagrams: a table swap lost some", received.Load(), total)
	}
	close(stop)
	wg.Wait()
	if changes.Load() < 10 {
		t.Errorf("only %d peer changes while %d datagrams streamed: the test did not overlap them", changes.Load(), total)
	}
	t.Logf("%d datagrams from A, %d peer changes at B meanwhile, over %d source addresses",
		total, changes.Load(), nonzero(a.Stats().SentPerAddress))
}

func nonzero(counts []uint64) int {
	n := 0
	for _, c := range counts {
		if c > 0 {
			n++
		}
	}
	return n
}
