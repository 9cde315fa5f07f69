package host

import (
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/internal/testutil"
)

// TestDiagnoseRawMTU checks the MTU finding of the raw mode: fine at
// 1500, a warning naming the VPN MTU to use below it.
func TestDiagnoseRawMTU(t *testing.T) {
	ns := testutil.NewNetns(t)
	ns.Run(t, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.Run(t, "ip", "link", "set", "v0", "up")
	ns.Run(t, "ip", "link", "set", "v1", "up")
	cfg := conn.Config{Range: conn.Range{Prefix: testPrefix}, Port: 51820, Receive: conn.Raw{Interface: "v0"}}

	wantFinding(t, diagnoseIn(t, ns, cfg), CheckMTU, OK, "")

	ns.Run(t, "ip", "link", "set", "v0", "mtu", "1492") // PPPoE
	r := diagnoseIn(t, ns, cfg)
	wantFinding(t, r, CheckMTU, Warn, "MTU = 1412")
	if f, _ := r.Find(CheckMTU); !strings.Contains(f.Detail, "1492") || !strings.Contains(f.Detail, "reassembles") {
		t.Errorf("detail %q does not give the MTU and say the receiver reassembles", f.Detail)
	}
	if r.Blocking() {
		t.Errorf("a small MTU blocks:\n%s", r)
	}
}
