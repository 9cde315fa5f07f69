// Package verdict judges whether a tunnel's sparse flow kept its latency
// under load, from two latency probes sent at the same instants: one
// inside the tunnel (inner), one beside it on the same path (outer). It
// compares them pairwise, instant by instant, so that whatever stalls both
// probes (a busy host, a noisy VM) cancels out, and it says "inconclusive"
// when the host itself was too busy for any comparison to mean something.
//
// It is pure: no I/O, no processes, no plotting. The testbed feeds it
// probe samples and prints what it returns. [Judge] is the entry point.
//
// # Pairing
//
// Two irtt clients at the same interval send on two grids whose phases
// differ by a constant offset (each process starts a few ms apart). The
// offset is estimated first: the densest quarter-interval of the
// nearest-neighbour send offsets, taken modulo the interval (so that an
// offset near half an interval, seen as +I/2 by some samples and -I/2 by
// others, is one offset), and its median. Samples then pair by send time
// less that offset, within half an interval, each at most once. An instant
// is a pair; its difference is inner RTT minus outer RTT when both were
// answered.
//
// # The figure judged
//
// The target is the one the experiment has always had: the inner probe's
// p99 within the gap of the outer probe's. The figure judged
// (RoundResult.GapQ, "the p99 gap" below) is the Targets.Quantile of the
// inner round trips less that of the outer ones, both taken over the same
// instants: those where both probes were answered outside host stalls.
// Drawing both from one set of instants is what makes them comparable: a
// stall that delays both probes is one instant, left out of both, rather
// than a sample in one probe's tail and not in the other's.
//
// An earlier figure, the quantile of the per-instant differences plus
// their (1-Quantile) quantile less their median, did not work: two probes
// on one path each wait behind the bulk flows' packets on their own, so
// their differences spread over several ms both ways even with no tunnel
// (the direct mode's p99 of the differences was 2.7 to 6 ms on a quiet
// host), and the correction for that spread moved with the shape of each
// machine's jitter by as much as the target itself: -2.1 ms on one
// machine, 2.0 to 2.9 ms on CI's, for spread runs whose p99s differed by
// 0.5 and 0.6 ms.
//
// # Host stalls
//
// A sparse flow beside the tunnel waits at a fq_codel bottleneck for at
// most one quantum per other active flow (ten 1514-byte packets at
// 20 Mbit/s is 6 ms) on top of the path's base round trip (1 to 5 ms). An
// outer round trip over 30 ms is therefore the host stalling, not a queue.
// Every answered instant sent within such a stall, from one interval
// before the stalled outer probe left until it came back, is left out of
// both probes' round trips: inside a stall the two probes' waits depend on
// which process the host ran first, not on the tunnel.
//
// # One round
//
// Each round is judged alone, by these rules in this order:
//
//   - Inconclusive when the probes met at too few instants: under 50, or
//     under half of the larger probe's samples.
//   - Inconclusive when the idle probes (if given) already miss: either
//     probe's p99 over 20 ms or its loss over 2% with no load, or the
//     idle p99 gap above the gap (or fewer than 50 idle
//     instants to take it from). The host (or the
//     tunnel's processes, starved of CPU) then adds delays that no
//     comparison under load can tell from a queue, and a host that busy
//     may not even build the queue under test (so no Met either).
//   - Inconclusive when the outer probe under load lost over 2% (a
//     sparse flow alone in its queue loses nothing: it shared a queue
//     with a bulk flow, or the host dropped), or when over 10% of the
//     answered instants were host stalls (too few left to speak for the
//     round; a path with no flow queues at all lands here too).
//   - NotMet when the inner probe lost materially more than the outer one
//     (more than twice as much, and by more than 1 percentage point and
//     3 standard errors of the difference), or when the p99 gap exceeds
//     the gap. The stalled instants count in it as passes, low round
//     trips under both quantiles, so that leaving them out never pushes
//     a tail round trip over the quantile: a delay both probes share can
//     only make an instant stalled, which never adds a miss. But NotMet
//     only when the outer probe's p99 under load is at most 30 ms; above
//     it the host was stalling, a stall can hit the tunnel's processes
//     alone, and the round is Inconclusive.
//   - Inconclusive when too few instants remain for the quantile (at
//     least 50, and 1/(1-quantile) so that the quantile is not just the
//     maximum).
//   - Met otherwise: the p99 gap at the instants the host did not stall
//     is at most the gap.
//
// The checks of each probe's own round trips use its p99 whatever
// Targets.Quantile is: they ask whether the host stalled, not whether the
// tunnel met its target.
//
// A round whose p99 gap is small except at instants where both
// probes stalled is therefore Met, and a round where the inner probe
// queues behind the tunnel's bulk flows while the outer probe stays fine
// (the one-flow mode) is NotMet.
//
// # Rounds
//
// A mode is Met when more than half of its rounds are Met and the others
// are Inconclusive or missed narrowly (by at most five times the gap, with no
// loss miss); NotMet when more than half of its rounds are NotMet and
// none of the Met rounds contradicts a wide miss; and Inconclusive
// otherwise: too many inconclusive rounds, or Met rounds beside rounds
// that missed widely (the host's load changed between rounds). Requiring
// a majority of all rounds, not only of the conclusive ones, means that
// one quiet round among busy ones cannot decide alone.
package verdict
