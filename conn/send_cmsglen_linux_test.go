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
		{"spread, Not-ECT", outerHdr{kind: outerSpread, src: src}, 1, 36, []cmsg{pktinfo}},
		{"spread, ECT(0)", outerHdr{kind: outerSpread, src: src, ecn: flowaddr.ECT0}, 1, 60, []cmsg{pktinfo, tclass}},
		{"spread GSO run, Not-ECT", outerHdr{kind: outerSpread, src: src}, 3, 58, []cmsg{pktinfo, segment}},
		{"spread GSO run, ECT(0)", outerHdr{kind: outerSpread, src: src, ecn: flowaddr.ECT0}, 3, 82, []cmsg{pktinfo, tclass, segment}},
		{"default source GSO run, CE", outerHdr{kind: outerDefault, ecn: flowaddr.CE}, 2, 42, []cmsg{tclass, segment}},
	}
	p := make([]byte, 100)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b sendBatch
			for range tt.run {
				b.add(p, &tt.o, -1, true)
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
