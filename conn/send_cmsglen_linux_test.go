package conn

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
)

// TestSendBatchControl checks the control messages a batch header
// carries: which ones, in order, and a control length that ends at the
// last message's data, so that a lone IPV6_PKTINFO (36 bytes) fits the
// buffer the kernel keeps on its stack.
func TestSendBatchControl(t *testing.T) {
	type cmsg struct{ level, typ int32 }
	var (
		pktinfo = cmsg{unix.SOL_IPV6, unix.IPV6_PKTINFO}
		tclass  = cmsg{unix.SOL_IPV6, unix.IPV6_TCLASS}
		tos     = cmsg{unix.SOL_IP, unix.IP_TOS}
		segment = cmsg{unix.SOL_UDP, unix.UDP_SEGMENT}
	)
	src := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xa, 15: 7}
	tests := []struct {
		name    string
		o       outerHdr
		run     int // datagrams of one size and outer header, sent with GSO
		wantLen int
		want    []cmsg
	}{
		{"default source, Not-ECT", outerHdr{kind: outerDefault}, 1, 0, nil},
		{"default source, ECT(1)", outerHdr{kind: outerDefault, ecn: flowaddr.ECT1}, 1, 20, []cmsg{tclass}},
		{"IPv4, CE", outerHdr{kind: outerIPv4, ecn: flowaddr.CE}, 1, 20, []cmsg{tos}},
		{"port's socket, Not-ECT", outerHdr{kind: outerDefault, sock: 1, tclassAlways: true}, 1, 20, []cmsg{tclass}},
		{"port's socket GSO run, Not-ECT", outerHdr{kind: outerDefault, sock: 1, tclassAlways: true}, 2, 42, []cmsg{tclass, segment}},
		{"spread, Not-ECT", outerHdr{kind: outerSpread, src: src}, 1, 36, []cmsg{pktinfo}},
		{"spread, ECT(0)", outerHdr{kind: outerSpread, src: src, ecn: flowaddr.ECT0}, 1, 60, []cmsg{pktinfo, tclass}},
		{"spread, ECT(0) from its own socket", outerHdr{kind: outerSpread, src: src, ecn: flowaddr.ECT0, sock: 1, ecnBySock: true}, 1, 36, []cmsg{pktinfo}},
		{"spread GSO run, Not-ECT", outerHdr{kind: outerSpread, src: src}, 3, 58, []cmsg{pktinfo, segment}},
		{"spread GSO run, ECT(0)", outerHdr{kind: outerSpread, src: src, ecn: flowaddr.ECT0}, 3, 82, []cmsg{pktinfo, tclass, segment}},
		{"default source GSO run, CE", outerHdr{kind: outerDefault, ecn: flowaddr.CE}, 2, 42, []cmsg{tclass, segment}},
	}
	p := make([]byte, 100)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b sendBatch
			for range tt.run {
				b.add(p, 1, &tt.o, -1, true)
			}
			b.finish()
			if b.nhdr != 1 || b.count[0] != tt.run {
				t.Fatalf("%d headers, the first with %d datagrams; want 1 with %d", b.nhdr, b.count[0], tt.run)
			}
			h := &b.hdrs[0].Hdr
			if int(h.Controllen) != tt.wantLen {
				t.Errorf("control length %d, want %d", h.Controllen, tt.wantLen)
			}
			var got []cmsg
			ctrl := b.ctrlBytes(0)[:h.Controllen]
			for len(ctrl) > 0 {
				level, typ, data, rest, ok := nextCmsg(ctrl)
				if !ok {
					t.Fatalf("control messages %v end in a malformed one", got)
				}
				got = append(got, cmsg{level, typ})
				if (cmsg{level, typ}) == pktinfo && [16]byte(data[:16]) != src {
					t.Errorf("IPV6_PKTINFO address %x, want %x", data[:16], src)
				}
				ctrl = rest
			}
			if len(got) != len(tt.want) {
				t.Fatalf("control messages %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("control messages %v, want %v", got, tt.want)
				}
			}
			if (h.Control == nil) != (tt.wantLen == 0) {
				t.Errorf("Control %p with length %d", h.Control, h.Controllen)
			}
		})
	}
}

// TestSendBatchGroupable checks when a batch may go out socket by
// socket: only if no flow has datagrams on two sockets.
func TestSendBatchGroupable(t *testing.T) {
	type dgram struct {
		flow uint64
		sock uint16
	}
	const lowBitsAlike = 1 << 40 // same slot in the table, another flow
	tests := []struct {
		name string
		in   []dgram
		want bool
	}{
		{"one socket", []dgram{{1, 0}, {2, 0}, {1, 0}}, true},
		{"flows each on their own socket", []dgram{{1, 0}, {2, 1}, {1, 0}, {3, 2}, {2, 1}}, true},
		{"a flow on two sockets", []dgram{{1, 0}, {2, 1}, {1, 1}}, false},
		{"a flow back on its first socket", []dgram{{1, 1}, {2, 0}, {1, 0}}, false},
		{"flows alike in the table's bits", []dgram{{5, 0}, {5 + lowBitsAlike, 1}, {5 + 2*lowBitsAlike, 2}, {5, 0}}, true},
		{"alike, then one of them on another socket", []dgram{{5, 0}, {5 + lowBitsAlike, 1}, {5 + lowBitsAlike, 0}}, false},
	}
	var b sendBatch // reused, as the pool does: each call must forget the last
	for round := range 2 {
		for _, tt := range tests {
			p := make([]byte, 100)
			for _, d := range tt.in {
				b.add(p, d.flow, &outerHdr{sock: d.sock}, -1, false)
			}
			if got := b.groupable(); got != tt.want {
				t.Errorf("round %d, %s: groupable %v, want %v", round, tt.name, got, tt.want)
			}
			b.reset()
		}
	}
}
