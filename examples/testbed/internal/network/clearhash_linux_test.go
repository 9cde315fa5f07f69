package network

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestClearHashAttachesAndPasses attaches the hash-clearing program to the
// ingress of one end of a veth pair and checks that tc lists it there and
// that traffic still crosses, both ways. That the router then computes its
// own hash is what the control mode proves in the VM, where kernel
// WireGuard's flows must be squeezed into one flow's share.
func TestClearHashAttachesAndPasses(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	a, b := testutil.NewNetns(t), testutil.NewNetns(t)
	testutil.Veth(t, a, "va", b, "vb")
	a.Run(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "va", "nodad")
	b.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "vb", "nodad")

	if err := b.Do(func() error { return attachClearHash("vb") }); err != nil {
		if strings.Contains(err.Error(), "operation not permitted") || strings.Contains(err.Error(), "not supported") {
			t.Skipf("this kernel refuses tc BPF programs: %v", err)
		}
		t.Fatal(err)
	}
	// Attaching twice replaces the program rather than failing.
	if err := b.Do(func() error { return attachClearHash("vb") }); err != nil {
		t.Fatalf("attaching again: %v", err)
	}
	filters := b.Run(t, "tc", "filter", "show", "dev", "vb", "ingress")
	if strings.Count(filters, "direct-action") != 1 || !strings.Contains(filters, "fs_clear_hash") {
		t.Fatalf("tc filter show dev vb ingress: want one fs_clear_hash direct-action filter, got:\n%s", filters)
	}

	echoAcross(t, a, b, netip.MustParseAddrPort("[2001:db8:1::2]:9000"), 50, "the filtered interface")
}

func TestClearHashProgramShape(t *testing.T) {
	// The program must end in exit and return TC_ACT_OK: anything else
	// would drop or redirect every packet the router receives.
	n := len(clearHashProgram)
	if n < 2 || clearHashProgram[n-1].Code != 0x95 {
		t.Fatalf("the program does not end in BPF_EXIT: %+v", clearHashProgram)
	}
	if mov := clearHashProgram[n-2]; mov.Code != 0xb7 || mov.Regs != 0 || mov.Imm != tcActOK {
		t.Fatalf("the program does not set r0 = TC_ACT_OK before exit: %+v", mov)
	}
}
