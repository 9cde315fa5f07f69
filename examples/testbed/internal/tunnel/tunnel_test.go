package tunnel

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
)

// testWgspreadEnds are the two ends on the testbed's own address plan.
func testWgspreadEnds() [2]wgspreadEnd {
	return wgspreadEnds(testTopology(network.Options{}), "0a0b0c")
}

// testTopology is the testbed's address plan for opts, with namespaces
// named fstb-1-client and so on, none of them made.
func testTopology(opts network.Options) *network.Topology {
	topo, err := network.Plan(opts, "fstb-1-")
	if err != nil {
		panic(err)
	}
	return topo
}

func TestWgspreadEnds(t *testing.T) {
	ends := testWgspreadEnds()
	if ends[0].iface == ends[1].iface {
		t.Errorf("both ends name their interface %q: their UAPI sockets would clash", ends[0].iface)
	}
	for _, e := range ends {
		if len(e.iface) > 15 {
			t.Errorf("%s: interface name %q longer than IFNAMSIZ-1", e.side, e.iface)
		}
	}
	c, s := ends[0], ends[1]
	if c.ns != "fstb-1-client" || s.ns != "fstb-1-server" || c.self != s.peer || c.peer != s.self ||
		c.prefix != s.peerPrefix || c.peerPrefix != s.prefix || c.inner != s.peerInner || c.peerInner != s.inner {
		t.Errorf("the ends do not mirror each other:\nclient %+v\nserver %+v", c, s)
	}
	// The spread prefixes are the topology's, inside each side's site,
	// so the router routes them and both VPNs are measured on one plan.
	if !netip.MustParsePrefix("2001:db8:a::/48").Overlaps(c.prefix) || !netip.MustParsePrefix("2001:db8:b::/48").Overlaps(s.prefix) {
		t.Errorf("spread prefixes %v and %v, want them inside the sites", c.prefix, s.prefix)
	}
}

func TestWgspreadArgs(t *testing.T) {
	ends := testWgspreadEnds()
	// The key goes in a file: a command line is readable by every user.
	const keyFile = "/tmp/fstb-wgspread-1/hash-key"
	for _, tc := range []struct {
		name         string
		end          wgspreadEnd
		spread, open bool
		want         []string
	}{
		{"client stock bind", ends[0], false, false, []string{"-stock-bind", "wgsc0a0b0c"}},
		{"server stock bind", ends[1], false, true, []string{"-stock-bind", "wgss0a0b0c"}},
		{"client spread", ends[0], true, false, []string{"-prefix", "2001:db8:a:1::/64",
			"-peer-prefix", "[2001:db8:b::1]:51820=2001:db8:b:1::/64", "-hash-key-file", keyFile, "wgsc0a0b0c"}},
		{"server spread, open", ends[1], true, true, []string{"-prefix", "2001:db8:b:1::/64",
			"-peer-prefix", "[2001:db8:a::1]:51820=2001:db8:a:1::/64", "-hash-key-file", keyFile, "-open", "wgss0a0b0c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wgspreadArgs(tc.end, tc.spread, tc.open, keyFile); !slices.Equal(got, tc.want) {
				t.Errorf("wgspread %q\nwant     %q", got, tc.want)
			}
		})
	}
}

func TestWgSetArgs(t *testing.T) {
	ends := testWgspreadEnds()
	for _, tc := range []struct {
		name      string
		end       wgspreadEnd
		keepalive time.Duration
		want      []string
	}{
		{"client", ends[0], 0, []string{"wg", "set", "wgsc0a0b0c", "listen-port", "51820", "private-key", "/proc/self/fd/0",
			"peer", "PEERPUB=", "endpoint", "[2001:db8:b::1]:51820", "allowed-ips", "2001:db8:d::b/128"}},
		{"server, keepalive", ends[1], 25 * time.Second, []string{"wg", "set", "wgss0a0b0c", "listen-port", "51820", "private-key", "/proc/self/fd/0",
			"peer", "PEERPUB=", "endpoint", "[2001:db8:a::1]:51820", "allowed-ips", "2001:db8:d::a/128", "persistent-keepalive", "25"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wgSetArgs(tc.end, "PEERPUB=", tc.keepalive); !slices.Equal(got, tc.want) {
				t.Errorf("wg set %q\nwant   %q", got, tc.want)
			}
		})
	}
	// The canonical endpoint must be the peer host's own address, which
	// the peer's -peer-prefix names: wgspread drops datagrams from any
	// other source outside the peer's prefix.
	if ep := netip.AddrPortFrom(ends[0].peer, wgsPort); !strings.Contains(wgspreadArgs(ends[0], true, false, "k")[3], ep.String()+"=") {
		t.Errorf("the client's -peer-prefix does not name the endpoint %v it gives wg", ep)
	}
}

func TestFlowtunCounters(t *testing.T) {
	raw := `{"tun_packets":10,"dropped_auth":2,"dropped_replay":1,"send_errors":3,"conn":{"Sent":10,"SentPerAddress":[0,1,2]}}`
	trimmed := trimCounters([]byte(raw))
	if strings.Contains(string(trimmed), "SentPerAddress") || !strings.Contains(string(trimmed), `"Sent":10`) {
		t.Errorf("trimCounters = %s, want the per-address counts gone and the rest kept", trimmed)
	}
	dropped, auth := Drops(map[string]json.RawMessage{"client": trimmed, "server": json.RawMessage(`{"dropped_malformed":4}`)})
	if dropped != 10 || auth != 2 {
		t.Errorf("Drops = %d, %d; want 10, 2", dropped, auth)
	}
}

func TestFlowtunSpreadArgs(t *testing.T) {
	topo := testTopology(network.Options{})
	c, s := topo.ClientSpread, topo.ServerSpread
	for _, tc := range []struct {
		f              Flowtun
		client, server string
	}{
		{Flowtun{}, "-spread off", "-spread off"},
		{Flowtun{Spread: true}, "-spread both -prefix " + c.String() + " -peer-prefix " + s.String(), "-spread both -prefix " + s.String() + " -peer-prefix " + c.String()},
		// The server has one address: the client spreads its sources,
		// the server sends to the client's range.
		{Flowtun{Spread: true, ServerSingle: true}, "-spread src -prefix " + c.String(), "-spread dst -peer-prefix " + c.String()},
	} {
		if got := strings.Join(tc.f.spreadArgs("client", c, s), " "); got != tc.client {
			t.Errorf("%+v: client %q, want %q", tc.f, got, tc.client)
		}
		if got := strings.Join(tc.f.spreadArgs("server", s, c), " "); got != tc.server {
			t.Errorf("%+v: server %q, want %q", tc.f, got, tc.server)
		}
	}
}

func TestFlowtunPortArgs(t *testing.T) {
	topo := testTopology(network.Options{})
	c, s := topo.ClientSpread, topo.ServerSpread
	const ports = "ports=61000-61255"
	for _, tc := range []struct {
		name                   string
		f                      Flowtun
		client, server         string
		clientOpen, serverOpen bool
	}{
		{"ports", Flowtun{Spread: true, Dimension: DimensionPorts, Open: true},
			"-range " + ports, "-peer-range " + ports, false, true},
		{"ports behind the NAT: learnt, never -open", Flowtun{Spread: true, Dimension: DimensionPorts, NAT: true, Open: true},
			"-range " + ports, "-peer-range nat-ports=256", false, false},
		{"both", Flowtun{Spread: true, Dimension: DimensionBoth, Open: true},
			"-range prefix=" + c.String() + ",bits=10," + ports + " -peer-prefix " + s.String(),
			"-prefix " + s.String() + " -peer-range prefix=" + c.String() + ",bits=10," + ports, true, true},
		{"both, the server on one address", Flowtun{Spread: true, Dimension: DimensionBoth, ServerSingle: true},
			"-range prefix=" + c.String() + ",bits=10," + ports, "-peer-range prefix=" + c.String() + ",bits=10," + ports, false, false},
		{"one-flow ignores the dimension", Flowtun{Dimension: DimensionPorts, Open: true}, "-spread off", "-spread off", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(tc.f.spreadArgs("client", c, s), " "); got != tc.client {
				t.Errorf("client %q, want %q", got, tc.client)
			}
			if got := strings.Join(tc.f.spreadArgs("server", s, c), " "); got != tc.server {
				t.Errorf("server %q, want %q", got, tc.server)
			}
			if got := slices.Contains(tc.f.pathArgs("client"), "-open"); got != tc.clientOpen {
				t.Errorf("client -open %v, want %v", got, tc.clientOpen)
			}
			if got := slices.Contains(tc.f.pathArgs("server"), "-open"); got != tc.serverOpen {
				t.Errorf("server -open %v, want %v", got, tc.serverOpen)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	counters := map[string]json.RawMessage{
		"client": json.RawMessage(`{"sent": 9, "keepalives_sent": 1, "conn": {"SentWaiting": 5, "SentProbes": 2, "PathsOpened": 3}}`),
		"server": json.RawMessage(`{"sent": 9, "conn": {"SentWaiting": 1, "SentProbes": 4, "PathsOpened": 6}}`),
	}
	got := Paths(counters)
	if want := (PathCounters{SentWaiting: 6, SentProbes: 6, PathsOpened: 9, Keepalives: 1}); got != want {
		t.Errorf("Paths = %+v, want %+v", got, want)
	}
	if d := got.Since(PathCounters{SentProbes: 1}); d.SentProbes != 5 || d.PathsOpened != 9 {
		t.Errorf("Since = %+v", d)
	}
}

// TestFlowtunPathArgs checks that -open goes only to an end that sends to
// the peer's range, which flowtun requires, and the keepalive to both.
func TestFlowtunPathArgs(t *testing.T) {
	for _, tc := range []struct {
		name           string
		f              Flowtun
		client, server string
	}{
		{"one-flow, open", Flowtun{Open: true}, "", ""},
		{"spread, open", Flowtun{Spread: true, Open: true}, "-open", "-open"},
		{"spread, learning, keepalive", Flowtun{Spread: true, Keepalive: 25 * time.Second}, "-keepalive 25s", "-keepalive 25s"},
		{"one server address, open", Flowtun{Spread: true, Open: true, ServerSingle: true}, "", "-open"},
	} {
		client, server := strings.Join(tc.f.pathArgs("client"), " "), strings.Join(tc.f.pathArgs("server"), " ")
		if client != tc.client || server != tc.server {
			t.Errorf("%s: client %q, server %q; want %q, %q", tc.name, client, server, tc.client, tc.server)
		}
	}
}
