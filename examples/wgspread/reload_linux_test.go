package main

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flowspread/flowspread/internal/testutil"
)

// TestPeersFileReload changes A's spread options for B while both run:
// A starts with B in its -peers-file, learning paths, so the first
// datagram of each new inner flow to B waits on the canonical pair; after
// the file declares B open and SIGHUP, new flows go on their spread pairs
// from their first datagram. A file with an error changes nothing, and
// wg set keeps working. (A file that dropped B's prefix while B spreads
// would make A's wireguard-go roam to one of B's range addresses, as the
// package doc of conn/wireguard says: the test keeps B's prefix.)
func TestPeersFileReload(t *testing.T) {
	testutil.SkipUnlessRoot(t)
	if _, err := exec.LookPath("wg"); err != nil {
		t.Skip("needs the wg command: apt-get install wireguard-tools (scripts/install-deps)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for the TUN devices: %v", err)
	}
	bin := buildWgspread(t)
	file := filepath.Join(t.TempDir(), "peers")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# B learning paths\n" + e2eLinkB.String() + "=" + e2ePrefixB.String() + "\n")
	w := newWgTunnelArgs(t, bin, []string{"-peers-file", file}, nil)
	echo := netip.AddrPortFrom(e2eInnerB, 9000)
	testutil.UDPEchoServer(t, w.nsB, echo)
	const flows = 16

	// flowsToB runs new inner flows and returns how many datagrams A sent
	// to B on the canonical pair, and on how many pairs in all.
	flowsToB := func(what string) (canonical, pairs int) {
		t.Helper()
		c := startCapture(t, w.nsB, "vb")
		if err := testutil.UDPFlows(w.nsA, echo, flows, 1); err != nil {
			t.Fatalf("%s: UDP: %v%s", what, err, w.logs())
		}
		to, _ := c.stop(t, e2eLinkB.Port())
		canonical = to[outerPair{e2eLinkA.Addr(), e2eLinkB.Addr()}]
		t.Logf("%s: %d datagrams to B on the canonical pair, %d outer pairs in all", what, canonical, len(to))
		return canonical, len(to)
	}
	reload := func(n int) {
		t.Helper()
		if err := w.procA.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, "A's log of the reload", func() bool {
			return strings.Count(w.procA.Out.String(), "reload") >= n
		})
	}

	if canonical, _ := flowsToB("learning"); canonical < flows {
		t.Errorf("learning: %d datagrams on the canonical pair, want at least one per new flow (%d)", canonical, flows)
	}

	write(e2eLinkB.String() + "=" + e2ePrefixB.String() + " open\n")
	reload(1)
	if canonical, pairs := flowsToB("open"); canonical >= flows/2 || pairs < flows/2 {
		t.Errorf("B open after the reload: %d datagrams on the canonical pair and %d pairs for %d new flows; want fewer than %d and at least %d%s",
			canonical, pairs, flows, flows/2, flows/2, w.logs())
	}

	write(e2eLinkB.String() + "=" + e2ePrefixB.String() + " fast\n")
	reload(2)
	if !strings.Contains(w.procA.Out.String(), "keeping them as they were") {
		t.Errorf("a file with an error: A's log does not say it kept the peers:%s", w.logs())
	}
	if canonical, pairs := flowsToB("after a bad file"); canonical >= flows/2 || pairs < flows/2 {
		t.Errorf("a bad file changed the peers: %d datagrams on the canonical pair, %d pairs", canonical, pairs)
	}

	w.nsA.Run(t, "wg", "set", w.ifA, "peer", w.pubB, "persistent-keepalive", "25")
	if out := w.nsA.Run(t, "wg", "show", w.ifA, "persistent-keepalive"); !strings.Contains(out, "25") {
		t.Errorf("wg set after the reloads: wg show says %q", out)
	}
	checkEndpoint(t, "after the reloads", w.nsA, w.ifA, w.pubB, e2eLinkB)
}
