package sockopt

import "errors"

// ErrNotAsked is [RecvCaps.GROErr] when GRO was not asked for.
var ErrNotAsked = errors.New("not asked for")

// Source is the socket option that lets a socket send from addresses of
// the prefix that no interface has.
type Source uint8

const (
	// NoSource: no option was set.
	NoSource Source = iota
	// Freebind is IPV6_FREEBIND (Linux 4.15).
	Freebind
	// FreebindIPv4Option is IP_FREEBIND, which sets the same flag on
	// kernels that predate IPV6_FREEBIND.
	FreebindIPv4Option
	// Transparent is IPV6_TRANSPARENT.
	Transparent
)

func (s Source) String() string {
	switch s {
	case Freebind:
		return "IPV6_FREEBIND"
	case FreebindIPv4Option:
		return "IP_FREEBIND"
	case Transparent:
		return "IPV6_TRANSPARENT"
	}
	return "none"
}

// SendOptions are the options of [SetSend].
type SendOptions struct {
	// Transparent asks for IPV6_TRANSPARENT instead of IPV6_FREEBIND.
	Transparent bool
	// FlowLabel sets IPV6_FLOWINFO_SEND, so that each datagram's flow
	// label comes from its destination's sin6_flowinfo.
	FlowLabel bool
}

// SendCaps is what [SetSend] found.
type SendCaps struct {
	// Source is the option that lets the socket send from any address.
	Source Source
	// GSOErr is nil when the kernel has UDP GSO (UDP_SEGMENT, Linux 4.18).
	GSOErr error
	// Buffers are the socket buffers the kernel granted.
	Buffers Buffers
}

// RecvCaps is what [SetRecv] found.
type RecvCaps struct {
	// GROErr is nil when UDP_GRO (Linux 5.0) is on; it is ErrNotAsked
	// when the caller did not ask for it.
	GROErr error
	// BatchErr is nil when the kernel has recvmmsg(2) (some sandboxes and
	// emulators lack it).
	BatchErr error
}

// Buffers are a socket's send and receive buffer sizes, in bytes, as
// requested (without the kernel's doubling for its overhead).
type Buffers struct {
	Recv, Send int
}

// BufferSize is what the socket asks for its send and receive buffers. A
// tunnel's bursts (sendmmsg batches, GRO runs of a bulk flow) overflow the
// default of about 200 KiB and the kernel drops whole runs, which the
// inner TCP sees as losses; wireguard-go asks for 7 MiB as well.
const BufferSize = 7 << 20

// Error is a socket option that could not be set, with advice.
type Error struct {
	// Option names the option, e.g. "IPV6_TRANSPARENT".
	Option string
	// Advice says what to do, in plain words; empty when there is none.
	Advice string
	Err    error
}

func (e *Error) Error() string {
	if e.Advice != "" {
		return "set " + e.Option + ": " + e.Advice + ": " + e.Err.Error()
	}
	return "set " + e.Option + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }
