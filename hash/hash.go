package hash

// InputLen is the length of the input every Hasher and Policy hashes: the
// fixed binary form of a flow key (flowaddr.KeyLen, from
// [github.com/flowspread/flowspread/flowaddr.Key.Bytes]).
const InputLen = 40

// Input is a flow key's fixed binary form. It is passed by value: Go cannot
// see through an interface call, so a slice or pointer handed to a Hasher
// through one escapes to the heap, while an array passed by value stays on
// the stack. flowaddr.Key.Bytes returns a [40]byte, which is assignable to
// an Input.
type Input [InputLen]byte

// Hasher is a keyed 64-bit hash of a flow key's bytes.
//
// Implementations must be safe for concurrent use and must not allocate.
// Two Hashers built from the same secret must return the same value for the
// same input on every architecture, so that both ends of a tunnel map a flow
// alike.
type Hasher interface {
	Sum64(in Input) uint64
}

// Policy gives the hash a flow uses at a time: it decides when keys rotate
// and keeps a busy flow on its mapping across a rotation.
//
// now is the wall-clock time in Unix nanoseconds (time.Now().UnixNano()).
// Both tunnel ends derive epochs from it, so their clocks should agree to
// well within a rotation period. Implementations must be safe for
// concurrent use and must not allocate.
type Policy interface {
	FlowHash(in Input, now int64) uint64
}
