package flowaddr

import (
	"math/rand/v2"
	"testing"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestParseIPAgreesWithRun checks parseIP's loop against the full parser
// on random packets, the benchmark packets, each of them cut at every
// length and with single header bytes changed: whatever parseIP's loop
// accepts must get the key and error run gives (what it rejects goes to
// run anyway). The fuzz test checks the same through the exported
// functions; this one runs with every go test.
func TestParseIPAgreesWithRun(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 15))
	var pkts [][]byte
	for _, bp := range testutil.BenchPackets() {
		pkts = append(pkts, bp.Data)
	}
	for range 300 {
		pkts = append(pkts, testutil.RandomPacket(r, MaxDepth, false).Data)
	}
	check := func(pkt []byte) {
		t.Helper()
		var fast, full Key
		errFast := parseIP(&fast, pkt)
		errFull := parse(&full, pkt, layerIP)
		if fast != full || errFast != errFull {
			t.Fatalf("packet % x: parseIP gives %+v, %v; run %+v, %v", pkt, fast, errFast, full, errFull)
		}
	}
	for _, pkt := range pkts {
		check(pkt)
		// The headers of the fast path's shapes lie in the first 128 bytes.
		headers := min(len(pkt), 128)
		for n := range headers {
			check(pkt[:n])
		}
		mutated := make([]byte, len(pkt))
		for i := range headers {
			for _, v := range []byte{0, 1, 4, 6, 17, 41, 47, 0x45, 0x60, 0xff, pkt[i] + 1, pkt[i] - 1} {
				copy(mutated, pkt)
				mutated[i] = v
				check(mutated)
			}
		}
	}
}
