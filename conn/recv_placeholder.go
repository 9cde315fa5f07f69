package conn

import "github.com/flowspread/flowspread/flowaddr"

// This file stands in for declarations that conn.go (the send side and the
// public API, written alongside) owns, so the receive side compiles and is
// tested on its own. Delete it when conn.go lands.

// Flow is the inner flow a datagram belongs to; see conn.go.
type Flow struct {
	Hash  uint64
	ECN   flowaddr.ECN
	Valid bool
}
