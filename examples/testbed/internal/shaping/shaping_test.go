package shaping

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestSetupCommands(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		want []string // each command, joined
	}{
		{FQCodel, []string{
			"qdisc replace dev rs root handle 1: htb default 1",
			"class replace dev rs parent 1: classid 1:1 htb rate 20000kbit ceil 20000kbit burst 62500 cburst 62500",
			"qdisc replace dev rs parent 1:1 handle 10: fq_codel",
		}},
		{FIFO, []string{
			"qdisc replace dev rs root handle 1: htb default 1",
			"class replace dev rs parent 1: classid 1:1 htb rate 20000kbit ceil 20000kbit burst 62500 cburst 62500",
			"qdisc replace dev rs parent 1:1 handle 10: pfifo limit 1000",
		}},
		{CakeFlows, []string{"qdisc replace dev rs root handle 1: cake bandwidth 20000kbit besteffort flows"}},
		{CakeTriple, []string{"qdisc replace dev rs root handle 1: cake bandwidth 20000kbit besteffort triple-isolate"}},
		{CakeDualSrcHost, []string{"qdisc replace dev rs root handle 1: cake bandwidth 20000kbit besteffort dual-srchost"}},
		{CakeDualDstHost, []string{"qdisc replace dev rs root handle 1: cake bandwidth 20000kbit besteffort dual-dsthost"}},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			var got []string
			for _, c := range tc.kind.SetupCommands("rs", 20) {
				got = append(got, strings.Join(c, " "))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestHTBBurst(t *testing.T) {
	for _, tc := range []struct {
		mbit float64
		want int
	}{
		{20, 62500}, // 25 ms at 20 Mbit/s
		{1, 3125},   // 25 ms at 1 Mbit/s, above two frames
		{0.5, 3028}, // never below two full frames
		{100, 312500},
	} {
		if got := htbBurst(tc.mbit); got != tc.want {
			t.Errorf("htbBurst(%v) = %d, want %d", tc.mbit, got, tc.want)
		}
	}
}

func TestRateArg(t *testing.T) {
	for _, tc := range []struct {
		mbit float64
		want string
	}{{20, "20000kbit"}, {0.5, "500kbit"}, {12.3456, "12346kbit"}} {
		if got := rateArg(tc.mbit); got != tc.want {
			t.Errorf("rateArg(%v) = %s, want %s", tc.mbit, got, tc.want)
		}
	}
}

func TestParseQdiscKind(t *testing.T) {
	for _, k := range Kinds {
		if got, err := ParseKind(string(k)); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
	for _, tc := range []struct {
		kind           Kind
		kernel         string
		cake, hostFair bool
	}{
		{FQCodel, "fq_codel", false, false},
		{CakeFlows, "cake", true, false},
		{CakeTriple, "cake", true, true},
		{CakeDualSrcHost, "cake", true, true},
		{CakeDualDstHost, "cake", true, true},
		{FIFO, "pfifo", false, false},
	} {
		if got := tc.kind.KernelQdisc(); got != tc.kernel {
			t.Errorf("%s: KernelQdisc %q, want %q", tc.kind, got, tc.kernel)
		}
		if tc.kind.Cake() != tc.cake || tc.kind.HostFair() != tc.hostFair {
			t.Errorf("%s: Cake %v HostFair %v, want %v %v", tc.kind, tc.kind.Cake(), tc.kind.HostFair(), tc.cake, tc.hostFair)
		}
	}
	if _, err := ParseKind("cake"); err == nil || !strings.Contains(err.Error(), "cake-flows") {
		t.Errorf("ParseKind(cake) error %v, want one listing the kinds", err)
	}
}

// The fixtures are `tc -s -j qdisc show` in a namespace whose veth "va"
// was shaped to 20 Mbit/s, sampled while 3 bulk TCP flows ran (iproute2
// 6.1, Debian's 6.1 kernel, in scripts/vm).
func TestQdiscStatsFromTc(t *testing.T) {
	for _, tc := range []struct {
		file      string
		kind      string
		flows     uint64
		bulk      uint64
		wantDrops bool
	}{
		{"tc-fq_codel.json", "fq_codel", 3, 0, true},
		{"tc-cake-flows.json", "cake", 3, 3, false},
		{"tc-cake-triple.json", "cake", 3, 3, false},
		{"tc-fifo.json", "pfifo", 0, 0, false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			qs, err := parseTc(fixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := Leaf(qs, "rs"); ok {
				t.Error("found a qdisc on a device the dump does not have")
			}
			q, ok := Leaf(qs, "va")
			if !ok {
				t.Fatal("no queueing qdisc on va")
			}
			var s Stats
			s.Add(q)
			if s.Kind != tc.kind {
				t.Errorf("kind %q, want %q", s.Kind, tc.kind)
			}
			if s.MaxFlows != tc.flows || s.MaxBulkFlows != tc.bulk {
				t.Errorf("flows %d (bulk %d), want %d (%d)", s.MaxFlows, s.MaxBulkFlows, tc.flows, tc.bulk)
			}
			if s.Packets == 0 || s.Bytes == 0 {
				t.Errorf("no traffic counted: %+v", s)
			}
			if tc.wantDrops && s.Drops == 0 {
				t.Error("no drops counted")
			}
		})
	}
}

func TestQdiscStatsKeepsMaximum(t *testing.T) {
	var s Stats
	s.Add(Qdisc{Kind: "fq_codel", Packets: 10, NewFlowsLen: 2, OldFlowsLen: 7})
	s.Add(Qdisc{Kind: "fq_codel", Packets: 20, NewFlowsLen: 0, OldFlowsLen: 1})
	if s.MaxFlows != 9 || s.lastFlows != 1 || s.Packets != 20 || s.Samples != 2 {
		t.Errorf("after two samples: %+v; want max 9 flows, last 1, 20 packets", s)
	}
}

func TestParseTcQdiscsRejectsGarbage(t *testing.T) {
	if _, err := parseTc([]byte("Error: Cannot find device \"rs\"")); err == nil {
		t.Error("no error for tc's error text")
	}
}

// The parser reads tc's output, which a failed or changed tc can garble:
// it must return an error, never panic.
func FuzzParseTc(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "tc-*.json"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		qs, err := parseTc(data)
		if err != nil {
			return
		}
		if q, ok := Leaf(qs, "va"); ok {
			var s Stats
			s.Add(q)
		}
	})
}
