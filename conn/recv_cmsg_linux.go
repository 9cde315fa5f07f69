package conn

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nextCmsg splits the first control message off b (the msg_control bytes
// recvmsg(2) filled). It checks every length against b, so a short or
// garbled buffer ends the walk (ok false) instead of reading past it.
// It does not allocate.
func nextCmsg(b []byte) (level, typ int32, data, rest []byte, ok bool) {
	if len(b) < unix.SizeofCmsghdr {
		return 0, 0, nil, nil, false
	}
	// Read the header field by field: b need not be aligned.
	var l uint64
	const lenSize = unsafe.Sizeof(unix.Cmsghdr{}.Len)
	if lenSize == 8 {
		l = binary.NativeEndian.Uint64(b)
	} else {
		l = uint64(binary.NativeEndian.Uint32(b))
	}
	level = int32(binary.NativeEndian.Uint32(b[lenSize:]))
	typ = int32(binary.NativeEndian.Uint32(b[lenSize+4:]))
	if l < unix.SizeofCmsghdr || l > uint64(len(b)) {
		return 0, 0, nil, nil, false
	}
	data = b[cmsgAlign(unix.SizeofCmsghdr):l]
	if next := uint64(cmsgAlign(int(l))); next < uint64(len(b)) {
		rest = b[next:]
	}
	return level, typ, data, rest, true
}

// cmsgAlign rounds n up to the alignment of control messages (the size of
// a pointer on Linux).
func cmsgAlign(n int) int {
	const align = int(unsafe.Sizeof(uintptr(0)))
	return (n + align - 1) &^ (align - 1)
}
