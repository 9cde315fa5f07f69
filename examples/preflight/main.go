// Command preflight checks whether this host is ready to spread a VPN's
// flows over an IPv6 prefix, and says how to fix what is not.
//
//	preflight -prefix 2001:db8:b::/64 -port 51820
//	preflight -prefix 2001:db8:b::/64 -port 51820 -interface eth0   # raw receive mode
//
// It prints one line per check, with the command that fixes each problem,
// changes nothing, and exits with status 1 if something blocks spreading
// (2 for bad arguments). It checks the network namespace it runs in.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/host"
)

func main() {
	prefix := flag.String("prefix", "", "the IPv6 prefix routed to this host that flows spread over, e.g. 2001:db8:b::/64")
	port := flag.Uint("port", 0, "the UDP port the VPN listens on, e.g. 51820")
	iface := flag.String("interface", "", "receive raw (AF_PACKET) on this interface instead of through a local route")
	transparent := flag.Bool("transparent", false, "the VPN's socket uses IPV6_TRANSPARENT instead of IPV6_FREEBIND")
	flag.Parse()

	// The config the VPN would pass to conn.Listen, as far as the host is
	// concerned.
	cfg := conn.Config{Transparent: *transparent}
	if *iface != "" {
		cfg.Receive = conn.Raw{Interface: *iface}
	}
	if *prefix == "" {
		fmt.Fprintln(os.Stderr, "preflight: -prefix is required, e.g. -prefix 2001:db8:b::/64")
		os.Exit(2)
	}
	p, err := netip.ParsePrefix(*prefix)
	if err != nil {
		fmt.Fprintf(os.Stderr, "preflight: -prefix: %v\n", err)
		os.Exit(2)
	}
	if *port > 65535 {
		fmt.Fprintf(os.Stderr, "preflight: -port %d is not a UDP port (1-65535)\n", *port)
		os.Exit(2)
	}
	cfg.Range.Prefix, cfg.Port = p, uint16(*port)

	r := host.Diagnose(cfg)
	fmt.Print(r)
	if r.Blocking() {
		fmt.Println("\nSpreading will not work until the BLOCK findings are fixed.")
		os.Exit(1)
	}
	fmt.Println("\nReady.")
}
