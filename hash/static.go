package hash

// Static is a [Policy] that hashes every flow with one Hasher forever: a
// flow's mapping never changes. It is the simplest policy and the right one
// when the key is itself rotated out of band (for example with the VPN's
// own session), but an observer who watches long enough learns which outer
// addresses belong to one long-lived flow.
//
// It ignores the time, so a conn with a Static policy never reads the
// clock. A Static is safe for concurrent use and does not allocate.
type Static struct {
	h Hasher
}

var _ Policy = (*Static)(nil)

// NewStatic returns a policy that always hashes with h. It panics if h is
// nil.
func NewStatic(h Hasher) *Static {
	if h == nil {
		panic("hash: NewStatic called with a nil Hasher")
	}
	return &Static{h: h}
}

// FlowHash returns h.Sum64(in), whatever now is.
func (s *Static) FlowHash(in Input, now int64) uint64 { return sum64(s.h, &in) }

// Hasher returns the policy's Hasher.
func (s *Static) Hasher() Hasher { return s.h }
