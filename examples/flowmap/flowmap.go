package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"text/tabwriter"

	"github.com/google/gopacket/layers"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
)

// Link types that carry a bare IP packet. DLT_RAW is 12 or 14 on some
// systems and 101 in files (LINKTYPE_RAW); 228 and 229 are IPv4 and IPv6.
var rawIPLinks = map[layers.LinkType]bool{12: true, 14: true, 101: true, 228: true, 229: true}

var errLinkType = errors.New("unsupported link type (want Ethernet, raw IP, Linux cooked or BSD loopback)")

// classify finds the flow key of a captured frame.
func classify(frame []byte, link layers.LinkType) (flowaddr.Key, error) {
	switch {
	case link == layers.LinkTypeEthernet:
		return flowaddr.ParseEthernet(frame)
	case link == layers.LinkTypeLinuxSLL:
		return flowaddr.ParseLinuxSLL(frame)
	case link == layers.LinkTypeNull || link == layers.LinkTypeLoop:
		// A 4-byte address family in host or network order: the IP
		// version nibble that follows tells the rest.
		if len(frame) < 4 {
			return flowaddr.Key{}, flowaddr.ErrTruncated
		}
		return flowaddr.Parse(frame[4:])
	case rawIPLinks[link]:
		return flowaddr.Parse(frame)
	}
	return flowaddr.Key{}, errLinkType
}

// result is what flowmap learned of one packet.
type result struct {
	key    flowaddr.Key
	bucket uint32
	addr   netip.Addr
	err    error
}

type packetLine struct {
	N      int    `json:"n"`
	Proto  uint8  `json:"proto"`
	Src    string `json:"src"`
	Sport  uint16 `json:"sport"`
	Dst    string `json:"dst"`
	Dport  uint16 `json:"dport"`
	Bucket uint32 `json:"bucket"`
	Addr   string `json:"addr"`
}

type errorLine struct {
	N   int    `json:"n"`
	Err string `json:"err"`
}

// appendJSON appends the packet's JSON line, newline included.
func (r *result) appendJSON(b []byte, n int) []byte {
	var v any = errorLine{N: n, Err: fmt.Sprint(r.err)}
	if r.err == nil {
		v = packetLine{
			N: n, Proto: r.key.Proto,
			Src: r.key.SrcAddr().String(), Sport: r.key.SrcPort,
			Dst: r.key.DstAddr().String(), Dport: r.key.DstPort,
			Bucket: r.bucket, Addr: r.addr.String(),
		}
	}
	line, _ := json.Marshal(v) // cannot fail: plain structs of strings and numbers
	return append(append(b, line...), '\n')
}

type bucketUse struct {
	packets int
	flows   []flowaddr.Key // in order of first appearance
}

// flowMap classifies packets and keeps per-bucket use for the summary.
type flowMap struct {
	mapper       *flowaddr.Mapper
	hasher       hash.Hasher
	symmetric    bool
	packets      int
	unclassified int
	errs         map[string]int
	buckets      map[uint32]*bucketUse
	seen         map[flowaddr.Key]bool
}

func newFlowMap(m *flowaddr.Mapper, h hash.Hasher, symmetric bool) *flowMap {
	return &flowMap{
		mapper: m, hasher: h, symmetric: symmetric,
		errs:    map[string]int{},
		buckets: map[uint32]*bucketUse{},
		seen:    map[flowaddr.Key]bool{},
	}
}

func (m *flowMap) add(frame []byte, link layers.LinkType) result {
	m.packets++
	key, err := classify(frame, link)
	if err != nil {
		m.unclassified++
		m.errs[err.Error()]++
		return result{err: err}
	}
	if m.symmetric {
		key = key.Canonical()
	}
	bucket := m.mapper.Bucket(m.hasher.Sum64(key.Bytes()))
	use := m.buckets[bucket]
	if use == nil {
		use = &bucketUse{}
		m.buckets[bucket] = use
	}
	use.packets++
	if !m.seen[key] {
		m.seen[key] = true
		use.flows = append(use.flows, key)
	}
	return result{key: key, bucket: bucket, addr: netip.AddrFrom16(m.mapper.Addr16(bucket))}
}

func (m *flowMap) writeSummary(w io.Writer) {
	fmt.Fprintf(w, "%d packets, %d flows, %d not classified; %d addresses of %s (%s layout)\n",
		m.packets, len(m.seen), m.unclassified, m.mapper.Len(), m.mapper.Prefix(), m.mapper.Layout())
	order := make([]uint32, 0, len(m.buckets))
	for b := range m.buckets {
		order = append(order, b)
	}
	sort.Slice(order, func(i, j int) bool { return order[i] < order[j] })

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "bucket\taddress\tpackets\tflows\t")
	var fullest uint32
	shared, sharedFlows := 0, 0
	for _, b := range order {
		u := m.buckets[b]
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t\n", b, m.addr(b), u.packets, len(u.flows))
		f := m.buckets[fullest]
		if f == nil || len(u.flows) > len(f.flows) || len(u.flows) == len(f.flows) && u.packets > f.packets {
			fullest = b
		}
		if len(u.flows) > 1 {
			shared++
			sharedFlows += len(u.flows)
		}
	}
	tw.Flush()
	if len(order) == 0 {
		return
	}
	f := m.buckets[fullest]
	fmt.Fprintf(w, "\nfullest bucket: %d (%s) with %d flows and %d packets\n", fullest, m.addr(fullest), len(f.flows), f.packets)
	fmt.Fprintf(w, "occupied buckets: %d; a uniform hash expects %.1f for %d flows in %d buckets\n",
		len(order), expectedOccupied(len(m.seen), m.mapper.Len()), len(m.seen), m.mapper.Len())
	fmt.Fprintf(w, "flows sharing a bucket: %d flows in %d buckets\n", sharedFlows, shared)
	for _, b := range order {
		u := m.buckets[b]
		if len(u.flows) < 2 {
			continue
		}
		fmt.Fprintf(w, "  bucket %d (%s):\n", b, m.addr(b))
		for _, k := range u.flows {
			fmt.Fprintf(w, "    %s\n", flowString(k))
		}
	}
	if len(m.errs) > 0 {
		fmt.Fprintln(w, "\nnot classified:")
		reasons := make([]string, 0, len(m.errs))
		for e := range m.errs {
			reasons = append(reasons, e)
		}
		sort.Strings(reasons)
		for _, e := range reasons {
			fmt.Fprintf(w, "  %d  %s\n", m.errs[e], e)
		}
	}
}

func (m *flowMap) addr(bucket uint32) netip.Addr { return netip.AddrFrom16(m.mapper.Addr16(bucket)) }

// expectedOccupied is the mean number of non-empty buckets when flows
// fall uniformly into buckets: B(1 - (1-1/B)^F).
func expectedOccupied(flows, buckets int) float64 {
	b := float64(buckets)
	return b * (1 - math.Pow(1-1/b, float64(flows)))
}

func flowString(k flowaddr.Key) string {
	src := netip.AddrPortFrom(k.SrcAddr(), k.SrcPort)
	dst := netip.AddrPortFrom(k.DstAddr(), k.DstPort)
	s := fmt.Sprintf("%s %s > %s", protoName(k.Proto), src, dst)
	if k.Flags&flowaddr.FlagFragment != 0 {
		s += " (fragments)"
	}
	return s
}

var protoNames = map[uint8]string{
	1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp",
	58: "icmpv6", 132: "sctp", 136: "udplite",
}

func protoName(p uint8) string {
	if name, ok := protoNames[p]; ok {
		return name
	}
	return fmt.Sprintf("proto %d", p)
}
