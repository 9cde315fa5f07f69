package flowaddr

import "errors"

// More errors returned by [Parse], [ParseEthernet] and [ParseLinuxSLL],
// preallocated like those of errors.go.
var (
	ErrVLANTags = errors.New("flowaddr: more VLAN tags in an Ethernet frame than MaxVLANTags")
	ErrNotIP    = errors.New("flowaddr: frame does not carry IPv4 or IPv6 (unsupported EtherType)")
)
