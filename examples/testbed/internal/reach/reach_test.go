package reach

import "testing"

func TestParseNstat(t *testing.T) {
	out := `#kernel
TcpRetransSegs                  12                 0.0
TcpExtTCPSACKReorder            3                  0.0
`
	got := parseNstat(out, []string{"TcpRetransSegs", "TcpExtTCPSACKReorder", "TcpExtTCPRenoReorder"})
	if got["TcpRetransSegs"] != 12 || got["TcpExtTCPSACKReorder"] != 3 || got["TcpExtTCPRenoReorder"] != 0 || len(got) != 3 {
		t.Errorf("parseNstat = %v", got)
	}
	if Sum(got) != 15 {
		t.Errorf("Sum = %d, want 15", Sum(got))
	}
}

func TestPingSummary(t *testing.T) {
	m := received.FindSubmatch([]byte("--- 2001:db8:e::b ping statistics ---\n3 packets transmitted, 2 received, 33.3333% packet loss, time 404ms\n"))
	if m == nil || string(m[1]) != "2" {
		t.Errorf("received = %q", m)
	}
}
