package host

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

func diagnoseIn(t *testing.T, ns *testutil.Netns, cfg conn.Config) Report {
	t.Helper()
	var r Report
	if err := ns.Do(func() error { r = Diagnose(cfg); return nil }); err != nil {
		t.Fatal(err)
	}
	return r
}

// wantFinding fails t unless the report has the check with severity s and,
// when fixHas is not empty, a fix that contains it.
func wantFinding(t *testing.T, r Report, check string, s Severity, fixHas string) {
	t.Helper()
	f, ok := r.Find(check)
	if !ok {
		t.Fatalf("no %q finding in:\n%s", check, r)
	}
	if f.Severity != s || !strings.Contains(f.Fix, fixHas) {
		t.Errorf("%q finding is %v with fix %q; want %v with a fix containing %q; report:\n%s", check, f.Severity, f.Fix, s, fixHas, r)
	}
}

func TestDiagnoseAnyIPLocalRoute(t *testing.T) {
	ns := testutil.NewNetns(t)
	cfg := conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}, Port: 51820}

	r := diagnoseIn(t, ns, cfg)
	wantFinding(t, r, CheckLocalRoute, Block, "ip -6 route add local 2001:db8:b::/64 dev lo")
	if !r.Blocking() {
		t.Errorf("a missing local route does not block:\n%s", r)
	}

	ns.Run(t, "ip", "-6", "route", "add", "local", "2001:db8:b::/64", "dev", "lo")
	r = diagnoseIn(t, ns, cfg)
	wantFinding(t, r, CheckLocalRoute, OK, "")
	wantFinding(t, r, CheckFreebind, OK, "")
	wantFinding(t, r, CheckPort, OK, "")
	wantFinding(t, r, CheckReachability, Info, "route 2001:db8:b::/64 via")
	if r.Blocking() {
		t.Errorf("blocks with the route in place:\n%s", r)
	}
	// Whether an rpfilter is available depends on the kernel; either way
	// the finding is there and says what it looked at.
	if f, ok := r.Find(CheckRPFilter); !ok || f.Severity > Info || !strings.Contains(f.Detail, "rp") {
		t.Errorf("reverse path filter finding %+v (found %v), want ok or info", f, ok)
	}
}

func TestDiagnosePartialLocalRoute(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "-6", "route", "add", "local", "2001:db8:b::/65", "dev", "lo")
	r := diagnoseIn(t, ns, conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}, Port: 51820})
	wantFinding(t, r, CheckLocalRoute, Block, "ip -6 route add local 2001:db8:b::/64 dev lo")
	if f, _ := r.Find(CheckLocalRoute); !strings.Contains(f.Detail, "only part") {
		t.Errorf("detail %q does not say only part of the prefix is local", f.Detail)
	}
}

func TestDiagnosePortInUse(t *testing.T) {
	ns := anyIPNetns(t)
	uc := listenUDP(t, ns, netip.AddrPort{})
	port := localAddrPort(uc).Port()
	r := diagnoseIn(t, ns, conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: port})
	wantFinding(t, r, CheckPort, Block, "ss -ulpn")
}

func TestDiagnoseIPv6Disabled(t *testing.T) {
	ns := anyIPNetns(t)
	ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6")
	r := diagnoseIn(t, ns, conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820})
	wantFinding(t, r, CheckIPv6, Block, "sysctl -w net.ipv6.conf.lo.disable_ipv6=0")
}

// TestDiagnoseIPv6DisabledOnDottedInterface checks the raw mode's
// interface when its name has a dot, as a VLAN's does (eth0.100).
func TestDiagnoseIPv6DisabledOnDottedInterface(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "v0.1", "type", "veth", "peer", "name", "v1")
	ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/v0.1/disable_ipv6")
	r := diagnoseIn(t, ns, rawConfig("v0.1"))
	wantFinding(t, r, CheckIPv6, Block, "sysctl -w net/ipv6/conf/v0.1/disable_ipv6=0")
}

func TestDiagnoseBadConfig(t *testing.T) {
	ns := testutil.NewNetns(t)
	for _, tt := range []struct {
		name string
		cfg  conn.Config
		want Severity
	}{
		{"ipv4-prefix", conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("192.0.2.0/24")}, Port: 1}, Block},
		{"no-prefix", conn.Config{Port: 1}, Block},
		{"no-port", conn.Config{Range: conn.Range{Prefix: testPrefix}}, Warn},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := diagnoseIn(t, ns, tt.cfg)
			wantFinding(t, r, CheckConfig, tt.want, "")
		})
	}
}

func TestDiagnoseRawMode(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.Run(t, "ip", "link", "set", "v0", "up")
	ns.Run(t, "ip", "link", "set", "v1", "up")
	cfg := conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820, Receive: conn.Raw{Interface: "v0"}}

	t.Run("not-routed", func(t *testing.T) {
		r := diagnoseIn(t, ns, cfg)
		wantFinding(t, r, CheckInterface, OK, "")
		wantFinding(t, r, CheckLocalRoute, OK, "")
		wantFinding(t, r, CheckCapabilities, OK, "")
		if r.Blocking() {
			t.Errorf("blocks:\n%s", r)
		}
	})
	t.Run("missing-interface", func(t *testing.T) {
		c := cfg
		c.Receive = conn.Raw{Interface: "nosuch0"}
		wantFinding(t, diagnoseIn(t, ns, c), CheckInterface, Block, "ip link show")
	})
	t.Run("interface-down", func(t *testing.T) {
		ns.Run(t, "ip", "link", "set", "v1", "down")
		ns.Run(t, "ip", "link", "set", "v0", "down")
		defer ns.Run(t, "ip", "link", "set", "v0", "up")
		defer ns.Run(t, "ip", "link", "set", "v1", "up")
		wantFinding(t, diagnoseIn(t, ns, cfg), CheckInterface, Block, "ip link set v0 up")
	})
	t.Run("forwarded", func(t *testing.T) {
		ns.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "v0", "nodad")
		ns.Run(t, "ip", "-6", "route", "add", testPrefix.String(), "via", "2001:db8:1::2", "dev", "v0")
		ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
		defer ns.Run(t, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/all/forwarding")
		defer ns.Run(t, "ip", "-6", "route", "del", testPrefix.String())
		wantFinding(t, diagnoseIn(t, ns, cfg), CheckForwarding, Warn, "ip -6 route add blackhole 2001:db8:b::/64")
	})
	t.Run("also-local", func(t *testing.T) {
		ns.Run(t, "ip", "-6", "route", "add", "local", testPrefix.String(), "dev", "lo")
		defer ns.Run(t, "ip", "-6", "route", "del", "local", testPrefix.String(), "dev", "lo", "table", "local")
		wantFinding(t, diagnoseIn(t, ns, cfg), CheckLocalRoute, Warn, "ip -6 route del local")
	})
}

func TestDiagnosePrefixOnLink(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8:b::1/64", "dev", "v0", "nodad")
	ns.Run(t, "ip", "-6", "route", "add", "local", testPrefix.String(), "dev", "lo")
	r := diagnoseIn(t, ns, conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820})
	wantFinding(t, r, CheckReachability, Warn, "proxy_ndp")
}

func TestParseCapEff(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status string
		want   uint64
		ok     bool
	}{
		{"root", "Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n", 0x1ffffffffff, true},
		{"net-raw-only", "CapEff:\t0000000000002000\n", 1 << capNetRaw, true},
		{"none", "CapEff:\t0000000000000000\n", 0, true},
		{"missing", "Name:\tx\n", 0, false},
		{"garbage", "CapEff:\tzz\n", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCapEff([]byte(tt.status))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseCapEff = %#x, %v; want %#x, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestReportString(t *testing.T) {
	r := Report{Findings: []Finding{
		{Check: CheckLocalRoute, Severity: Block, Detail: "not local", Fix: "ip -6 route add local 2001:db8:b::/64 dev lo"},
		{Check: CheckGSO, Severity: OK, Detail: "works"},
	}}
	want := "[BLOCK] local route: not local\n    fix: ip -6 route add local 2001:db8:b::/64 dev lo\n[ok] gso: works\n"
	if got := r.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
	if !r.Blocking() {
		t.Error("Blocking() false with a Block finding")
	}
	if (Report{Findings: r.Findings[1:]}).Blocking() {
		t.Error("Blocking() true without a Block finding")
	}
	for s, want := range map[Severity]string{OK: "ok", Info: "info", Warn: "warn", Block: "BLOCK", 9: "severity(9)"} {
		if s.String() != want {
			t.Errorf("Severity(%d).String() = %q, want %q", s, s.String(), want)
		}
	}
}
