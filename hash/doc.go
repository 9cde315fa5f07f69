// Package hash maps an inner flow to a 64-bit number with a keyed hash, and
// decides which key a flow uses when.
//
// flowspread gives every inner flow of a VPN tunnel its own outer IPv6
// address pair, so that fq_codel or cake on the path queue the flows apart.
// The outer addresses are picked from the flow's hash: the hash of the
// flow key's bytes ([github.com/flowspread/flowspread/flowaddr.Key.Bytes])
// chooses an address inside the sender's and the receiver's prefixes.
//
// # Why the hash is keyed
//
// An observer on the path sees outer addresses. With an unkeyed hash they
// could compute which outer addresses a given inner flow (say, a known
// server's port 443) would use, and so tell which tunnel traffic goes
// where; or craft inner flows that all land on one outer address and share
// one queue with a victim flow. With a secret 128-bit [Key] the mapping is
// a pseudorandom function to anyone without the key: outer addresses say
// how many flows there are, not which. Rotating the key
// ([Periodic]) bounds what an observer can learn by watching: a mapping
// lasts one epoch (two for a flow that never pauses), after which the same
// inner flow appears on unrelated addresses.
//
// # Hashers
//
// A [Hasher] computes the keyed hash. The default is SipHash-2-4
// ([SipHash24], via [github.com/dchest/siphash]), a PRF designed for short
// inputs such as our 40-byte flow keys. [SipHash13] is a faster variant
// with a smaller security margin. Any other keyed hash plugs in through
// the [NewHasher] seam, as long as it gives the same result on every
// architecture, since both tunnel ends must compute the same mapping.
//
// # Policies
//
// A [Policy] says which hash a flow uses at a given time. [Static] uses
// one Hasher forever. [Periodic] derives a fresh key every Period from a
// shared secret and hands busy flows over gently: a flow that is sending
// when the key changes keeps its old mapping until it pauses for IdleGap,
// so a burst is never split across two outer address pairs. The old
// mapping lasts at most until the next rotation, so no mapping outlives
// two Periods and a flow moves at most once per rotation.
//
// # How both ends agree
//
// The two ends of a tunnel hash the flow's canonical key
// ([github.com/flowspread/flowspread/flowaddr.Key.Canonical]), the same
// for both directions, with the same secret. Periodic derives epoch keys
// from Unix time, so two ends whose clocks agree switch keys together
// without exchanging a message; a skew of d maps apart the flows that
// start in the last d before a rotation ([Periodic], "Clock skew"), so
// keep the clocks in sync with NTP. The handover is decided by
// each end from the packets it sends; a flow active in both directions is
// handed over alike at both ends.
//
// # Allocation
//
// Hashers and policies do not allocate. They take the flow key's bytes as
// an [Input] array by value: Go cannot see through an interface call, so a
// slice passed through one would escape to the heap on every packet.
package hash
