package hash

// Hasher is a keyed 64-bit hash of a flow key's bytes.
//
// Implementations must be safe for concurrent use, must not retain p, and
// must not allocate. Two Hashers built from the same secret must return the
// same value for the same bytes on every architecture, so that both ends of
// a tunnel map a flow alike.
type Hasher interface {
	Sum64(p []byte) uint64
}

// Policy gives the hash a flow uses at a time: it decides when keys rotate
// and keeps a busy flow on its mapping across a rotation.
//
// now is the wall-clock time in Unix nanoseconds (time.Now().UnixNano()).
// Both tunnel ends derive epochs from it, so their clocks should agree to
// well within a rotation period. Implementations must be safe for
// concurrent use and must not allocate.
type Policy interface {
	FlowHash(p []byte, now int64) uint64
}
