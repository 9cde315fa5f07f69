package conn_test

import (
	"bytes"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// TestWriteBatchControlMessages sends a batch whose datagrams carry every
// mix of control messages (IPV6_PKTINFO, IPV6_TCLASS, UDP_SEGMENT) and
// checks that the kernel took each as meant: the outer source, the
// traffic class, and the runs counted as GSO sends.
func TestWriteBatchControlMessages(t *testing.T) {
	c, s, peer := spreadPair(t, conn.Config{})
	ma, mb := mapper(t, prefixA, 0), mapper(t, prefixB, 0)
	x := conn.Flow{Hash: 1 << 60, ECN: flowaddr.ECT0, Valid: true}
	y := conn.Flow{Hash: 2 << 60, ECN: flowaddr.CE, Valid: true}
	z := conn.Flow{Hash: 3 << 60, Valid: true}
	tests := []struct {
		name string
		flow conn.Flow
	}{
		{"run of ECT(0): PKTINFO, TCLASS, UDP_SEGMENT", x},
		{"run of ECT(0): PKTINFO, TCLASS, UDP_SEGMENT", x},
		{"run of ECT(0): PKTINFO, TCLASS, UDP_SEGMENT", x},
		{"unspread ECT(1): TCLASS", conn.Flow{ECN: flowaddr.ECT1}},
		{"spread Not-ECT: PKTINFO alone", z},
		{"run of CE: PKTINFO, TCLASS, UDP_SEGMENT", y},
		{"run of CE: PKTINFO, TCLASS, UDP_SEGMENT", y},
	}
	msgs := make([]conn.Message, len(tests))
	for i, tt := range tests {
		msgs[i] = conn.Message{Buf: payload(i, 1200), Peer: peer, Flow: tt.flow}
	}
	if n, err := c.WriteBatch(msgs); err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(msgs))
	}
	for i, tt := range tests {
		a := s.read(t)
		if !bytes.Equal(a.payload, msgs[i].Buf) {
			t.Fatalf("datagram %d (%s): %d bytes starting %x, want %d starting %x",
				i, tt.name, len(a.payload), a.payload[:4], len(msgs[i].Buf), msgs[i].Buf[:4])
		}
		if a.tclass != int(tt.flow.ECN) {
			t.Errorf("datagram %d (%s): traffic class %d, want %d", i, tt.name, a.tclass, tt.flow.ECN)
		}
		_, fromRange := ma.BucketOf(a.src.Addr().As16())
		if tt.flow.Valid {
			if a.src.Addr() != addrOf(ma, tt.flow.Hash) || a.dst != addrOf(mb, tt.flow.Hash) {
				t.Errorf("datagram %d (%s): outer pair %v -> %v, want %v -> %v", i, tt.name,
					a.src.Addr(), a.dst, addrOf(ma, tt.flow.Hash), addrOf(mb, tt.flow.Hash))
			}
		} else if fromRange || a.dst != peer.Addr() {
			t.Errorf("datagram %d (%s): outer pair %v -> %v, want the default source -> %v", i, tt.name, a.src, a.dst, peer.Addr())
		}
	}
	st := c.Stats()
	var perAddr uint64
	for _, n := range st.SentPerAddress {
		perAddr += n
	}
	wantGSO := uint64(0)
	if st.GSO {
		wantGSO = 2
	}
	if st.Sent != 7 || st.SentBytes != 7*1200 || st.SentUnspread != 1 || perAddr != 6 || st.GSOSends != wantGSO {
		t.Errorf("Stats: Sent %d, SentBytes %d, SentUnspread %d, per-address sum %d, GSOSends %d; want 7, %d, 1, 6, %d",
			st.Sent, st.SentBytes, st.SentUnspread, perAddr, st.GSOSends, 7*1200, wantGSO)
	}
}
