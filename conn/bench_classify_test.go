package conn

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/flowspread/flowspread/hash"
)

// simulatedClock is a Policy that hands its policy a simulated time, one
// step later per packet, instead of the wall clock Classify passes: a
// benchmark can then stand inside a rotation's handover window for as
// long as it runs.
type simulatedClock struct {
	policy    hash.Policy
	now, step int64
}

func (s *simulatedClock) FlowHash(in hash.Input, _ int64) uint64 {
	s.now += s.step
	return s.policy.FlowHash(in, s.now)
}

// classifyFlowCounts are the live flows of BenchmarkClassifyFlows.
var classifyFlowCounts = []int{1_000, 100_000, 1_000_000}

// BenchmarkClassifyFlows measures [FlowSpreadConn.Classify] per packet,
// with its allocations and the memory of its hash policy, as the number
// of live flows grows: packet i belongs to flow i*k mod flows, for k odd
// and prime to 5, so every flow recurs once per flows packets and a
// policy's per-flow state (if it had any) could not stay in the cache.
// The packet is IPv6/TCP, its source port and address rewritten per flow
// in one buffer, as a packet just read from a TUN device is in the cache.
//
//   - static: the default policy, SipHash-2-4 with a fixed key (the
//     baseline: no clock, no state).
//   - periodic: hash.Periodic (Period 1 h, IdleGap 10 min, the default
//     4096 Slots) between rotations: one hash and an activity record per
//     packet.
//   - handover: the same just after a rotation, while the previous
//     epoch's table is active: every packet hashes with the previous key,
//     finds its flow's slot idle and hashes again with the new key, the
//     most a packet costs.
//   - handover-maxslots: handover with hash.MaxSlots (2^20) slots, whose
//     two 8 MiB tables do not fit a CPU cache.
//
// The periodic cases run on a simulated clock that advances 1 µs per
// packet (1M packets/s), so the handover window, IdleGap long, lasts
// 6*10^8 packets. policy-bytes is the heap the policy holds once both
// epochs' tables exist: runtime.MemStats.HeapAlloc after a GC, less the
// same before NewPeriodic. It must not exceed 2*Slots*8 bytes (the two
// tables) plus 4 KiB, whatever the flow count.
//
//	go test ./conn -run '^$' -bench ClassifyFlows -benchmem -count 5
func BenchmarkClassifyFlows(b *testing.B) {
	for _, pc := range []struct {
		name     string
		slots    int
		handover bool
	}{
		{"static", 0, false},
		{"periodic", hash.DefaultSlots, false},
		{"handover", hash.DefaultSlots, true},
		{"handover-maxslots", hash.MaxSlots, true},
	} {
		b.Run(pc.name, func(b *testing.B) {
			for _, flows := range classifyFlowCounts {
				b.Run(fmt.Sprintf("flows=%d", flows), func(b *testing.B) {
					c, policyBytes := classifyConn(b, pc.slots, pc.handover)
					benchClassify(b, c, flows)
					b.ReportMetric(float64(policyBytes), "policy-bytes")
					if pc.slots > 0 && policyBytes > uint64(2*pc.slots*8+4096) {
						b.Errorf("the policy holds %d bytes, more than its two tables of %d slots", policyBytes, pc.slots)
					}
				})
			}
		})
	}
}

// classifyConn returns a conn that only classifies, with a static policy
// (slots 0) or a Periodic of slots slots, past a rotation and, with
// handover, inside its handover window; and the bytes the policy holds.
func classifyConn(b *testing.B, slots int, handover bool) (*FlowSpreadConn, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := &FlowSpreadConn{}
	if slots == 0 {
		c.policy = hash.NewStatic(hash.NewSipHash24(hash.Key{1, 2, 3}))
		c.timeless = true
	} else {
		p, err := hash.NewPeriodic(hash.PeriodicConfig{
			Secret: []byte("a benchmark's shared secret"), Period: time.Hour, IdleGap: 10 * time.Minute, Slots: slots,
		})
		if err != nil {
			b.Fatal(err)
		}
		rotation := int64(1e6) * int64(time.Hour) // a rotation, 114 years after 1970
		var busy hash.Input
		p.FlowHash(busy, rotation-int64(time.Microsecond)) // epoch e-1: its table is active
		start := rotation
		if !handover {
			start += int64(time.Hour) // epoch e+1: e saw no packet, so no handover
		}
		p.FlowHash(busy, start) // installs the epoch (and, with handover, keeps e-1's table)
		c.policy = &simulatedClock{policy: p, now: start, step: int64(time.Microsecond)}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return c, after.HeapAlloc - before.HeapAlloc
}

// benchClassify classifies b.N packets of flows flows with c.
func benchClassify(b *testing.B, c *FlowSpreadConn, flows int) {
	// IPv6 (ECT(0), TCP, 2001:db8:1::f, 2001:db8:2::1) and a TCP header,
	// ports 0 and 443.
	pkt := make([]byte, 60)
	pkt[0], pkt[1] = 0x60, 0x20
	binary.BigEndian.PutUint16(pkt[4:], 20)
	pkt[6], pkt[7] = 6, 64
	copy(pkt[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1})
	copy(pkt[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 2})
	pkt[39] = 1
	binary.BigEndian.PutUint16(pkt[42:], 443)
	pkt[52] = 5 << 4 // data offset: 5 words

	const stride = 0x9e3779b1 // odd and prime to 5: visits every flow once per flows packets
	var seq, sum uint64
	b.ReportAllocs()
	for b.Loop() {
		f := uint32(seq * stride % uint64(flows))
		seq++
		binary.BigEndian.PutUint32(pkt[20:], f>>16) // source address
		binary.BigEndian.PutUint16(pkt[40:], uint16(f))
		fl := c.Classify(pkt)
		if !fl.Valid {
			b.Fatal("packet not classified")
		}
		sum += fl.Hash
	}
	runtime.KeepAlive(sum)
}
