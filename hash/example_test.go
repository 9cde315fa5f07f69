package hash_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
)

// The worked example of the SipHash paper (appendix A): key 00 01 .. 0f,
// message 00 01 .. 0e.
func ExampleNewSipHash24() {
	key, err := hash.ParseKey("000102030405060708090a0b0c0d0e0f")
	if err != nil {
		fmt.Println(err)
		return
	}
	msg := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	fmt.Printf("%016x\n", hash.NewSipHash24(key).Sum(msg))
	// Output: a129ca6149be45e5
}

func ExampleParseKey() {
	_, err := hash.ParseKey("0x0102")
	fmt.Println(err)
	// Output: hash: key must be exactly 32 hex digits (128 bits): got 6 characters
}

// Both tunnel ends configure the same secret and hash the canonical key of
// the packets they send, so a request and its reply take one outer address
// pair, whatever the epoch.
func ExampleNewPeriodic() {
	secret := []byte("shared by both ends, 16+ bytes..")
	cfg := hash.PeriodicConfig{Secret: secret, Period: time.Hour}
	client, err := hash.NewPeriodic(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	server, _ := hash.NewPeriodic(cfg)

	request := flowaddr.Key{
		Src:     netip.MustParseAddr("2001:db8:1::10").As16(),
		Dst:     netip.MustParseAddr("2001:db8:2::20").As16(),
		SrcPort: 51000, DstPort: 443, Proto: 6,
	}
	reply := request.Reverse()
	rk, pk := request.Canonical(), reply.Canonical()
	rb, pb := rk.Bytes(), pk.Bytes()

	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	fmt.Println("epoch", client.Epoch(now))
	fmt.Println("same hash at both ends:", client.FlowHash(rb, now) == server.FlowHash(pb, now))
	// Output:
	// epoch 482148
	// same hash at both ends: true
}

// A flow busy at a rotation keeps its mapping until it pauses for IdleGap.
func ExamplePeriodic_handover() {
	p, _ := hash.NewPeriodic(hash.PeriodicConfig{
		Secret:  []byte("shared by both ends, 16+ bytes.."),
		Period:  time.Minute,
		IdleGap: 2 * time.Second,
	})
	k := flowaddr.Key{
		Src:   netip.MustParseAddr("2001:db8:1::10").As16(),
		Dst:   netip.MustParseAddr("2001:db8:2::20").As16(),
		Proto: 17, SrcPort: 5004, DstPort: 5004,
	}
	b := k.Bytes()
	rotation := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	ms := int64(time.Millisecond)

	before := p.FlowHash(b, rotation-100*ms)
	during := p.FlowHash(b, rotation+100*ms) // 200 ms later: still busy
	after := p.FlowHash(b, rotation+3000*ms) // after a 2.9 s pause
	fmt.Println("kept across the rotation:", during == before)
	fmt.Println("moved after the pause:", after != before)
	fmt.Println("now on the new epoch's mapping:", after == p.EpochHasher(p.Epoch(rotation)).Sum64(b))
	// Output:
	// kept across the rotation: true
	// moved after the pause: true
	// now on the new epoch's mapping: true
}
