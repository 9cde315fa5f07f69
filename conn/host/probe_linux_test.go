package host

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/internal/sockopt"
	"github.com/flowspread/flowspread/internal/testutil"
)

// TestDiagnoseAgreesWithListen checks that what Diagnose says of GSO and
// GRO is what a conn opened with the same config uses.
func TestDiagnoseAgreesWithListen(t *testing.T) {
	ns := anyIPNetns(t)
	for _, tt := range []struct {
		name string
		cfg  conn.Config
	}{
		{"defaults", conn.Config{}},
		{"no-gso", conn.Config{DisableGSO: true}},
		{"no-gro", conn.Config{DisableGRO: true}},
		{"raw", conn.Config{Receive: conn.Raw{Interface: "lo"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Range.Prefix, cfg.Port, cfg.AcceptUnknown = testPrefix, 51820, true
			r := diagnoseIn(t, ns, cfg)
			var c *conn.FlowSpreadConn
			if err := ns.Do(func() (err error) { c, err = conn.Listen(cfg); return err }); err != nil {
				t.Fatal(err)
			}
			st := c.Stats()
			c.Close()
			gso, _ := r.Find(CheckGSO)
			if (gso.Severity == OK) != st.GSO {
				t.Errorf("Diagnose says GSO %v (%s); Listen's conn has GSO %v", gso.Severity, gso.Detail, st.GSO)
			}
			gro, found := r.Find(CheckGRO)
			if (found && gro.Severity == OK) != st.GRO {
				t.Errorf("Diagnose says GRO %v (found %v: %s); Listen's conn has GRO %v", gro.Severity, found, gro.Detail, st.GRO)
			}
		})
	}
}

func TestDiagnoseFlowLabel(t *testing.T) {
	ns := anyIPNetns(t)
	if _, ok := diagnoseIn(t, ns, conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820}).Find(CheckFlowLabel); ok {
		t.Error("a flow label finding without FlowLabel")
	}
	r := diagnoseIn(t, ns, conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820, FlowLabel: true})
	wantFinding(t, r, CheckFlowLabel, OK, "")
	wantFinding(t, r, CheckPacketInfo, OK, "")
	wantFinding(t, r, CheckBatch, OK, "")
}

// TestDiagnoseWithoutCapabilities runs Diagnose as an unprivileged program
// would: Transparent is refused, and the buffers stay within the kernel's
// limits.
func TestDiagnoseWithoutCapabilities(t *testing.T) {
	cfg := conn.Config{Range: conn.Range{Prefix: testPrefix}, Transparent: true}
	var r Report
	testutil.WithoutNetCaps(t, func() { r = Diagnose(cfg) })
	wantFinding(t, r, CheckFreebind, Block, "leave Transparent off")
	wantFinding(t, r, CheckCapabilities, Block, "setcap cap_net_admin+ep")
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if limit, _ := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || limit >= sockopt.BufferSize {
		t.Skipf("net.core.rmem_max is %s: the buffers are not limited", b)
	}
	wantFinding(t, r, CheckBuffers, Warn, "net.core.rmem_max=")

	r = diagnoseIn(t, testutil.NewNetns(t), cfg) // as root
	wantFinding(t, r, CheckFreebind, OK, "")
	wantFinding(t, r, CheckBuffers, OK, "")
}

func TestCheckBuffers(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    sockopt.Buffers
		want Severity
	}{
		{"granted", sockopt.Buffers{Recv: sockopt.BufferSize, Send: sockopt.BufferSize}, OK},
		{"small-recv", sockopt.Buffers{Recv: 208 << 10, Send: sockopt.BufferSize}, Warn},
		{"small-send", sockopt.Buffers{Recv: sockopt.BufferSize, Send: 208 << 10}, Warn},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r Report
			checkBuffers(tt.b, func(check string, s Severity, fix, format string, args ...any) {
				r.Findings = append(r.Findings, Finding{Check: check, Severity: s, Fix: fix})
			})
			wantFinding(t, r, CheckBuffers, tt.want, "")
		})
	}
}
