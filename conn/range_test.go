package conn

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		text string
		want Range
	}{
		{"", Range{}},
		{"prefix=2001:db8:a::/64", Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64")}},
		{"prefix=2001:db8:a::/64,bits=8", Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Bits: 8}},
		{"ports=40000-40063", Range{Ports: PortRange{First: 40000, Bits: 6}}},
		{"nat-ports=64", Range{Ports: PortRange{Bits: 6, Translated: true}}},
		{" prefix=2001:db8:a::/64, ports=1024-2047 ", Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Ports: PortRange{First: 1024, Bits: 10}}},
	} {
		got, err := ParseRange(tc.text)
		if err != nil || got != tc.want {
			t.Errorf("ParseRange(%q) = %+v, %v; want %+v", tc.text, got, err, tc.want)
		}
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"2001:db8:a::/64", "is not key=value"},
		{"prefix=2001:db8:a::", "prefix"},
		{"bits=8", "give prefix too"},
		{"ports=40000-40062", "holds 63 ports: the count must be a power of two from 2"},
		{"ports=40063-40000", "the count must be a power of two from 2"},
		{"ports=40000", "is not FIRST-LAST"},
		{"ports=x-40001", `"x" is not a port`},
		{"ports=1-70000", `"70000" is not a port`},
		{"nat-ports=48", "is not a power-of-two count"},
		{"nat-ports=0", "is not a power-of-two count"},
		{"nat-ports=1", "is not a power-of-two count"},
		{"ports=40000-40000", "the count must be a power of two from 2"},
		{"ports=1-2,nat-ports=2", "not both"},
		{"prefix=2001:db8::/64,prefix=2001:db8::/64", "prefix given twice"},
		{"colour=red", "unknown key"},
	} {
		_, err := ParseRange(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRange(%q) error %v, want one with %q", tc.text, err, tc.want)
		}
	}
}

// TestRangeTextRoundTrip checks that String gives what ParseRange reads
// back to the same Range, for ranges as validate leaves them.
func TestRangeTextRoundTrip(t *testing.T) {
	for _, r := range []Range{
		{},
		{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Bits: 10},
		{Ports: PortRange{First: 40000, Bits: 6}},
		{Ports: PortRange{Bits: 4, Translated: true}},
		{Prefix: netip.MustParsePrefix("2001:db8:a::/48"), Bits: 3, Ports: PortRange{First: 2048, Bits: 10}},
	} {
		text, err := r.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Range
		if err := back.UnmarshalText(text); err != nil || back != r {
			t.Errorf("%+v: text %q reads back as %+v, %v", r, text, back, err)
		}
	}
}

func TestPortRangeContains(t *testing.T) {
	p := PortRange{First: 65532, Bits: 2}
	for port, want := range map[uint16]bool{65531: false, 65532: true, 65535: true, 0: false, 1: false} {
		if got := p.Contains(port); got != want {
			t.Errorf("%+v.Contains(%d) = %v, want %v", p, port, got, want)
		}
	}
	if (PortRange{}).Contains(0) || (PortRange{Bits: 3, Translated: true}).Contains(5) {
		t.Error("an empty or translated range contains a port")
	}
}

// FuzzParseRange checks that ParseRange never panics, and that what it
// accepts prints as text it reads back the same.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "prefix=2001:db8:a::/64,bits=8", "ports=40000-40063", "nat-ports=64", "ports=1-2,prefix=::/0", "bits=", "=,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRange(%q) = %+v, whose text %q reads back as %+v, %v", s, r, r.String(), back, err)
		}
	})
}
