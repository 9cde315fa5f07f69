package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/mixed.pcap")

const testKey = "000102030405060708090a0b0c0d0e0f"

// sampleFlow is one flow of the generated capture.
type sampleFlow struct {
	v6           bool
	tcp          bool
	src, dst     netip.Addr
	sport, dport uint16
}

// sampleFlows returns a fixed set of flows: IPv4 and IPv6, TCP and UDP.
func sampleFlows() []sampleFlow {
	r := rand.New(rand.NewPCG(1, 2))
	var flows []sampleFlow
	for i := range 40 {
		f := sampleFlow{v6: i%2 == 1, tcp: i%3 != 0, sport: uint16(1024 + r.IntN(60000)), dport: []uint16{80, 443, 53, 5201}[i%4]}
		if f.v6 {
			f.src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i), 15: 1})
			f.dst = netip.MustParseAddr("2001:db8:2::80")
		} else {
			f.src = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
			f.dst = netip.MustParseAddr("198.51.100.80")
		}
		flows = append(flows, f)
	}
	return flows
}

// frame builds an Ethernet frame of f in the given direction.
func (f sampleFlow) frame(t testing.TB, reply bool, payload int) []byte {
	src, dst, sport, dport := f.src, f.dst, f.sport, f.dport
	if reply {
		src, dst, sport, dport = dst, src, dport, sport
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	var ip gopacket.NetworkLayer
	proto := layers.IPProtocolUDP
	if f.tcp {
		proto = layers.IPProtocolTCP
	}
	if f.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	var l4 gopacket.SerializableLayer
	if f.tcp {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), ACK: true, Window: 512}
		tcp.SetNetworkLayerForChecksum(ip)
		l4 = tcp
	} else {
		udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		udp.SetNetworkLayerForChecksum(ip)
		l4 = udp
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	err := gopacket.SerializeLayers(buf, opts, eth, ip.(gopacket.SerializableLayer), l4, gopacket.Payload(make([]byte, payload)))
	require.NoError(t, err)
	return buf.Bytes()
}

// writeSample writes the sample capture: every flow both ways, a few
// packets each, and two frames that cannot be classified.
func writeSample(t testing.TB, path string) (packets int) {
	file, err := os.Create(path)
	require.NoError(t, err)
	defer file.Close()
	w := pcapgo.NewWriter(file)
	require.NoError(t, w.WriteFileHeader(65535, layers.LinkTypeEthernet))
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(b []byte) {
		ts = ts.Add(time.Millisecond)
		require.NoError(t, w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(b), Length: len(b)}, b))
		packets++
	}
	for round := range 3 {
		for _, f := range sampleFlows() {
			write(f.frame(t, false, 100*round))
			write(f.frame(t, true, 10))
		}
	}
	// An IPv6 header cut short, and an ARP frame.
	v6 := sampleFlows()[1].frame(t, false, 0)
	write(v6[:14+20])
	write(append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...))
	return packets
}

func runFlowmap(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(args, nil, &out, &errOut), "stderr: %s", errOut.String())
	return out.String()
}

func TestSampleCaptureIsCurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.pcap")
	writeSample(t, path)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	if *update {
		require.NoError(t, os.WriteFile("testdata/mixed.pcap", got, 0o644))
	}
	want, err := os.ReadFile("testdata/mixed.pcap")
	require.NoError(t, err)
	require.True(t, bytes.Equal(got, want), "testdata/mixed.pcap is stale: run go test ./examples/flowmap -run TestSampleCaptureIsCurrent -update")
}

func TestJSONLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.pcap")
	packets := writeSample(t, path)
	prefix := netip.MustParsePrefix("2001:db8:ff::/64")
	out := runFlowmap(t, "-prefix", prefix.String(), "-bits", "6", "-key", testKey, path)

	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, packets)
	flows := sampleFlows()
	errs := 0
	addrOf := map[string]string{}
	for i, line := range lines {
		var v struct {
			N      int
			Proto  uint8
			Src    string
			Sport  uint16
			Dst    string
			Dport  uint16
			Bucket uint32
			Addr   string
			Err    string
		}
		require.NoError(t, json.Unmarshal([]byte(line), &v), line)
		require.Equal(t, i+1, v.N)
		if v.Err != "" {
			errs++
			continue
		}
		// Packets alternate request, reply over the flows, round after round.
		f := flows[(i/2)%len(flows)]
		src, dst, sport, dport := f.src.String(), f.dst.String(), f.sport, f.dport
		if i%2 == 1 {
			src, dst, sport, dport = dst, src, dport, sport
		}
		require.Equal(t, []any{src, sport, dst, dport}, []any{v.Src, v.Sport, v.Dst, v.Dport}, line)
		addr := netip.MustParseAddr(v.Addr)
		require.True(t, prefix.Contains(addr), "address %s outside %s", addr, prefix)
		require.Less(t, v.Bucket, uint32(64))
		// One flow direction, one address, every time.
		id := v.Src + v.Dst + string(rune(v.Sport)) + string(rune(v.Dport))
		if prev, ok := addrOf[id]; ok {
			require.Equal(t, prev, v.Addr, "flow moved: %s", line)
		}
		addrOf[id] = v.Addr
	}
	require.Equal(t, 2, errs, "the truncated IPv6 packet and the ARP frame are not classified")
	require.Len(t, addrOf, 2*len(flows))

	again := runFlowmap(t, "-prefix", prefix.String(), "-bits", "6", "-key", testKey, path)
	require.Equal(t, out, again, "the same key must give the same output")
	other := runFlowmap(t, "-prefix", prefix.String(), "-bits", "6", "-key", strings.Repeat("f", 32), path)
	require.NotEqual(t, out, other, "another key must map differently")
}

func TestSymmetricMapsBothDirectionsAlike(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.pcap")
	writeSample(t, path)
	out := runFlowmap(t, "-symmetric", "-key", testKey, path)
	sc := bufio.NewScanner(strings.NewReader(out))
	var prev string
	for n := 0; sc.Scan(); n++ {
		var v struct{ Addr, Err string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v))
		if v.Err != "" {
			continue
		}
		if n%2 == 1 {
			require.Equal(t, prev, v.Addr, "reply mapped apart from its request: %s", sc.Text())
		}
		prev = v.Addr
	}
	require.NoError(t, sc.Err())
}

func TestSummary(t *testing.T) {
	out := runFlowmap(t, "-summary", "-bits", "4", "-key", testKey, "testdata/mixed.pcap")
	require.Contains(t, out, "242 packets, 80 flows, 2 not classified; 16 addresses of 2001:db8::/64 (contiguous layout)")
	require.Contains(t, out, "fullest bucket:")
	// 80 flows in 16 buckets must share.
	require.Contains(t, out, "flows sharing a bucket:")
	require.Contains(t, out, "not classified:")
	require.NotContains(t, out, "flows sharing a bucket: 0 flows")
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no file", []string{}, "name one capture file"},
		{"bad key", []string{"-key", "abc", "x.pcap"}, "-key"},
		{"bad prefix", []string{"-prefix", "nonsense", "x.pcap"}, "-prefix"},
		{"bad layout", []string{"-layout", "diagonal", "-key", testKey, "x.pcap"}, "want contiguous or scattered"},
		{"ipv4 prefix", []string{"-prefix", "192.0.2.0/24", "-key", testKey, "x.pcap"}, "IPv6"},
		{"missing file", []string{"-key", testKey, "does-not-exist.pcap"}, "no such file"},
		{"not a capture", []string{"-key", testKey, "flowmap_test.go"}, "not a pcap or pcapng"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tc.args, nil, &out, &errOut)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// A pcapng file of raw IP packets (no link header), as a TUN capture gives.
func TestPcapngRawIP(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tun.pcapng")
	file, err := os.Create(path)
	require.NoError(t, err)
	w, err := pcapgo.NewNgWriter(file, layers.LinkTypeRaw)
	require.NoError(t, err)
	flows := sampleFlows()[:6]
	for _, f := range flows {
		frame := f.frame(t, false, 20)
		ip := frame[14:] // strip the Ethernet header
		require.NoError(t, w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(ip), Length: len(ip)}, ip))
	}
	require.NoError(t, w.Flush())
	require.NoError(t, file.Close())

	out := runFlowmap(t, "-key", testKey, "-layout", "scattered", path)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, len(flows))
	for i, line := range lines {
		var v struct{ Src, Addr, Err string }
		require.NoError(t, json.Unmarshal([]byte(line), &v))
		require.Empty(t, v.Err, line)
		require.Equal(t, flows[i].src.String(), v.Src)
		require.True(t, netip.MustParsePrefix("2001:db8::/64").Contains(netip.MustParseAddr(v.Addr)), line)
	}
}
