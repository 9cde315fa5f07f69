package conn

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// refFirstOverlap is the check firstOverlap replaces: each peer against
// every one before it, over the prefixes validate accepts.
func refFirstOverlap(peers []Peer) (j, i int) {
	ok := func(p netip.Prefix) bool {
		return p.IsValid() && p.Addr().Is6() && !p.Addr().Is4In6() && p == p.Masked()
	}
	for i := range peers {
		if !ok(peers[i].Range.Prefix) {
			continue
		}
		for j := range i {
			if ok(peers[j].Range.Prefix) && peers[j].Range.Prefix.Overlaps(peers[i].Range.Prefix) {
				return j, i
			}
		}
	}
	return -1, -1
}

// randomPrefixes returns n peers whose prefixes are crowded into a few
// /40s, so that many overlap: random ones of mixed lengths, ones nested in
// or around an earlier one, copies of an earlier one, and now and then
// none, an IPv4 one, a v4-mapped one or one with bits past its length.
func randomPrefixes(rng *rand.Rand, n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i].Addr = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 15: byte(i)}), uint16(1+i))
		var p netip.Prefix
		switch r := rng.IntN(20); {
		case i > 0 && r < 4: // nested in, or around, an earlier one
			q := peers[rng.IntN(i)].Range.Prefix
			if !q.IsValid() || !q.Addr().Is6() {
				q = netip.MustParsePrefix("2001:db8::/32")
			}
			a := q.Addr().As16()
			for b := q.Bits() / 8; b < 16; b++ {
				a[b] = byte(rng.UintN(256))
			}
			p, _ = netip.AddrFrom16(a).Prefix(max(32, q.Bits()+rng.IntN(33)-8))
		case i > 0 && r < 6: // a copy of an earlier one
			p = peers[rng.IntN(i)].Range.Prefix
		case r == 6:
			// no prefix
		case r == 7:
			p = netip.MustParsePrefix("192.0.2.0/24")
		case r == 8:
			p = netip.MustParsePrefix("::ffff:192.0.2.0/120")
		case r == 9:
			p = netip.PrefixFrom(netip.MustParseAddr("2001:db8:1::1"), 48) // bits past its length
		default:
			a := netip.MustParseAddr("2001:db8::").As16()
			a[4] = byte(rng.IntN(4)) // one of four /40s
			for b := 5; b < 16; b++ {
				a[b] = byte(rng.UintN(256))
			}
			p, _ = netip.AddrFrom16(a).Prefix(36 + rng.IntN(92))
		}
		peers[i].Range.Prefix = p
	}
	return peers
}

// TestFirstOverlapMatchesPairs checks firstOverlap against the check of
// every pair on random prefix sets: both must name the same two peers, or
// none.
func TestFirstOverlapMatchesPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	found := 0
	for round := range 20000 {
		peers := randomPrefixes(rng, rng.IntN(40))
		gj, gi := firstOverlap(peers)
		wj, wi := refFirstOverlap(peers)
		if gj != wj || gi != wi {
			s := ""
			for k, p := range peers {
				s += fmt.Sprintf("\n  %d: %v", k, p.Range.Prefix)
			}
			t.Fatalf("round %d: firstOverlap = %d, %d; the check of every pair finds %d, %d%s", round, gj, gi, wj, wi, s)
		}
		if wi >= 0 {
			found++
		}
	}
	if found < 1000 || found > 19000 {
		t.Errorf("%d of 20000 sets had an overlap: the sets test too little of one kind", found)
	}
}

// TestValidateNamesOverlap checks that validate names the first
// overlapping pair, as the check of every pair did, among prefixes that
// contain, equal or lie inside one another, far apart in the list.
// benchPeerList gives peer i a prefix at 2001:db8:(0x100+i)::.
func TestValidateNamesOverlap(t *testing.T) {
	peers := benchPeerList(1000, 51820)
	for _, tc := range []struct {
		peer int
		pfx  string
		j, i int // the pair named, or -1, -1
	}{
		{900, "2001:db8:111::/56", 17, 900},       // equal to peer 17's
		{700, "2001:db8:290:8000::/49", 400, 700}, // inside peer 400's /48
		{999, "2001:db8:100::/44", 0, 999},        // holds the prefixes of peers 0 to 15
		{5, "2001:db8:100::/40", 0, 5},            // holds those of peers 0 to 255
		{2, "2001:db8:300::/40", 2, 512},          // holds those of peers 512 to 767
		{500, "2001:db8:103:ff00::/56", -1, -1},   // in peer 3's /48, not in its /64
	} {
		t.Run(tc.pfx, func(t *testing.T) {
			ps := append([]Peer(nil), peers...)
			ps[tc.peer].Range.Prefix = netip.MustParsePrefix(tc.pfx)
			if j, i := refFirstOverlap(ps); j != tc.j || i != tc.i {
				t.Fatalf("the check of every pair finds %d, %d; the test expects %d, %d", j, i, tc.j, tc.i)
			}
			_, err := Config{Peers: ps}.validate()
			if tc.i < 0 {
				if err != nil {
					t.Fatalf("validate: %v; want no error", err)
				}
				return
			}
			want := fmt.Sprintf("conn: Peers[%d].Range.Prefix %v overlaps Peers[%d].Range.Prefix %v: a datagram's source must name one peer", tc.i, ps[tc.i].Range.Prefix, tc.j, ps[tc.j].Range.Prefix)
			if err == nil || err.Error() != want {
				t.Errorf("validate: %v\nwant %s", err, want)
			}
		})
	}
}
