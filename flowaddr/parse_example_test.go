package flowaddr_test

import (
	"fmt"

	"github.com/flowspread/flowspread/flowaddr"
)

func ExampleParse() {
	// A DNS query as a TUN device hands it over: IPv4, UDP, no payload.
	pkt := []byte{
		0x45, 0x00, 0x00, 0x1c, // version 4, IHL 5, total length 28
		0x00, 0x00, 0x40, 0x00, // ID, Don't Fragment
		0x40, 0x11, 0x00, 0x00, // TTL 64, protocol 17 (UDP), checksum
		192, 0, 2, 1, // source
		198, 51, 100, 2, // destination
		0x9c, 0x40, 0x00, 0x35, // ports 40000 > 53
		0x00, 0x08, 0x00, 0x00, // UDP length 8, checksum
	}
	k, err := flowaddr.Parse(pkt)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%v:%d > %v:%d proto %d\n", k.SrcAddr(), k.SrcPort, k.DstAddr(), k.DstPort, k.Proto)

	// The reply parses to the reversed key; Canonical pairs the two.
	reply := append([]byte(nil), pkt...)
	copy(reply[12:16], pkt[16:20])
	copy(reply[16:20], pkt[12:16])
	copy(reply[20:22], pkt[22:24])
	copy(reply[22:24], pkt[20:22])
	r, _ := flowaddr.Parse(reply)
	fmt.Println(r == k.Reverse(), r.Canonical() == k.Canonical())
	// Output:
	// 192.0.2.1:40000 > 198.51.100.2:53 proto 17
	// true true
}
