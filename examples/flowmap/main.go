// Command flowmap shows which outer address each flow of a capture would
// get: it reads a pcap or pcapng file, classifies every packet with
// flowaddr, hashes its flow key and maps it into a prefix, exactly as a
// flowspread tunnel end would.
//
// Usage:
//
//	flowmap [-prefix P] [-bits N] [-key HEX] [-layout L] [-symmetric] [-summary] FILE
//
// By default it prints one JSON line per packet:
//
//	{"n":1,"proto":6,"src":"192.0.2.1","sport":80,"dst":"192.0.2.2","dport":1234,"bucket":17,"addr":"2001:db8::411"}
//
// or {"n":2,"err":"..."} for a packet it could not classify. With -summary it
// prints a table instead: packets and flows per bucket, the fullest bucket,
// and the flows that share a bucket. FILE "-" reads standard input.
//
// Link types: Ethernet, raw IP (IPv4 or IPv6) and Linux cooked capture.
// The output is deterministic for a given -key; without one, flowmap picks a
// random key and says which on standard error, so a run can be repeated.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/hash"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "flowmap:", err)
		os.Exit(1)
	}
}

type options struct {
	prefix    netip.Prefix
	bits      int
	key       hash.Key
	layout    flowaddr.Layout
	symmetric bool
	summary   bool
	file      string
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("flowmap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.TextVar(&o.prefix, "prefix", netip.MustParsePrefix("2001:db8::/64"), "IPv6 `prefix` the flows are spread over")
	bits := fs.Int("bits", 10, "use 2^`bits` addresses of the prefix (1 to 32)")
	fs.TextVar(&o.key, "key", hash.Key{}, "hash `key`: 32 hex digits (default: a random key, printed on standard error)")
	fs.Lookup("key").DefValue = "" // the zero key is no default
	layout := fs.String("layout", "contiguous", "address layout: contiguous or scattered")
	symmetric := fs.Bool("symmetric", false, "map both directions of a flow to one address (canonical keys)")
	summary := fs.Bool("summary", false, "print a table per bucket instead of one JSON line per packet")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: flowmap [flags] FILE   (a pcap or pcapng capture; - for standard input)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return options{}, errors.New("name one capture file")
	}
	o.bits, o.symmetric, o.summary, o.file = *bits, *symmetric, *summary, fs.Arg(0)
	switch *layout {
	case "contiguous":
		o.layout = flowaddr.LayoutContiguous
	case "scattered":
		o.layout = flowaddr.LayoutScattered
	default:
		return o, fmt.Errorf("-layout %q: want contiguous or scattered", *layout)
	}
	keyGiven := false
	fs.Visit(func(f *flag.Flag) { keyGiven = keyGiven || f.Name == "key" })
	if !keyGiven {
		var err error
		if o.key, err = hash.NewKey(); err != nil {
			return o, err
		}
		fmt.Fprintf(stderr, "flowmap: no -key given, using -key %s\n", o.key)
	}
	return o, nil
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	mapper, err := flowaddr.NewMapper(flowaddr.MapperConfig{
		Prefix: o.prefix, Bits: o.bits, Layout: o.layout, PermKey: o.key,
	})
	if err != nil {
		return err
	}
	in := stdin
	if o.file != "-" {
		f, err := os.Open(o.file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	packets, err := openCapture(in)
	if err != nil {
		return fmt.Errorf("%s: %w", o.file, err)
	}
	m := newFlowMap(mapper, hash.NewSipHash24(o.key), o.symmetric)
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	var line []byte
	for n := 1; ; n++ {
		frame, link, err := packets.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: packet %d: %w", o.file, n, err)
		}
		r := m.add(frame, link)
		if !o.summary {
			line = r.appendJSON(line[:0], n)
			out.Write(line)
		}
	}
	if o.summary {
		m.writeSummary(out)
	}
	return out.Flush()
}
