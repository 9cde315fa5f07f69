package flowaddr

import "errors"

// Errors returned by [Parse]. They are preallocated: parsing garbage never
// allocates. Each says what was wrong with the packet.
var (
	ErrEmpty        = errors.New("flowaddr: empty packet")
	ErrTruncated    = errors.New("flowaddr: packet truncated: a header runs past the end of the buffer")
	ErrVersion      = errors.New("flowaddr: not an IPv4 or IPv6 packet (bad version)")
	ErrHeaderLength = errors.New("flowaddr: bad header length field")
	ErrTotalLength  = errors.New("flowaddr: IP total or payload length disagrees with the buffer")
	ErrExtChain     = errors.New("flowaddr: IPv6 extension header chain too long")
	ErrDepth        = errors.New("flowaddr: encapsulation nested too deeply")
)
