package conn

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsgBytes builds one control message as the kernel lays it out.
func cmsgBytes(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestNextCmsgWalksKernelLayout(t *testing.T) {
	pktinfo := make([]byte, 20)
	pktinfo[0] = 0x20
	tclass := binary.NativeEndian.AppendUint32(nil, 0x03)
	b := append(cmsgBytes(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, pktinfo), cmsgBytes(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tclass)...)
	var got []int32
	for len(b) > 0 {
		level, typ, data, rest, ok := nextCmsg(b)
		if !ok {
			t.Fatalf("walk stopped with %d bytes left", len(b))
		}
		if level != unix.IPPROTO_IPV6 {
			t.Errorf("level %d, want %d", level, unix.IPPROTO_IPV6)
		}
		switch typ {
		case unix.IPV6_PKTINFO:
			if len(data) != 20 || data[0] != 0x20 {
				t.Errorf("pktinfo data % x", data)
			}
		case unix.IPV6_TCLASS:
			if len(data) != 4 || binary.NativeEndian.Uint32(data) != 3 {
				t.Errorf("tclass data % x", data)
			}
		}
		got = append(got, typ)
		b = rest
	}
	if len(got) != 2 || got[0] != unix.IPV6_PKTINFO || got[1] != unix.IPV6_TCLASS {
		t.Errorf("walked %v", got)
	}
}

func FuzzNextCmsg(f *testing.F) {
	f.Add(cmsgBytes(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, make([]byte, 20)))
	f.Add(cmsgBytes(unix.IPPROTO_UDP, unix.UDP_GRO, make([]byte, 4))[:10])
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			_, _, data, rest, ok := nextCmsg(b)
			if !ok {
				return
			}
			// rest always shrinks, so a walk ends.
			if len(data) > len(b) || len(rest) >= len(b) {
				t.Fatalf("data %d / rest %d bytes out of %d", len(data), len(rest), len(b))
			}
			b = rest
		}
	})
}
