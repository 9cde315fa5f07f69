// Package reach opens flows through a tunnel from either end and says
// which got through: pings with distinct echo ids, TCP connections made
// by this program re-executed as `testbed tcp-check` in a namespace, and
// a TCP connection left idle past a firewall's UDP timeout. It also reads
// the kernel's TCP counters (nstat) that tell reordering and
// retransmissions.
package reach

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/flowspread/flowspread/internal/netns"
)

// Ready is what `testbed tcp-check listen` prints once it listens.
const Ready = "tcp-check: listening"

// ioTimeout bounds each read and the dial of a check: a flow through a
// working tunnel answers in milliseconds, and a firewall that drops it
// never answers.
const ioTimeout = 5 * time.Second

// TCPMain is `testbed tcp-check listen ADDRPORT` or `testbed tcp-check
// dial [-idle D] ADDRPORT`: a listener that answers each connection, and
// a dialer that exchanges a line with it (and, with -idle, waits D, then
// has both ends send a segment, the listener's first). It returns the
// exit status: 0 when the exchange completed.
func TCPMain(args []string) int {
	fs := flag.NewFlagSet("tcp-check", flag.ContinueOnError)
	idle := fs.Duration("idle", 0, "with dial: leave the connection idle this long, then send a segment from each end")
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "usage: testbed tcp-check listen|dial [-idle D] ADDRPORT")
		return 2
	}
	verb := args[0]
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: testbed tcp-check listen|dial [-idle D] ADDRPORT")
		return 2
	}
	addr := fs.Arg(0)
	var err error
	switch verb {
	case "listen":
		err = listen(addr)
	case "dial":
		err = dial(addr, *idle)
	default:
		err = fmt.Errorf("unknown verb %q: want listen or dial", verb)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcp-check:", err)
		return 1
	}
	fmt.Println("tcp-check: ok")
	return 0
}

// listen answers connections until it is killed.
func listen(addr string) error {
	// No TCP keepalives (Go sends them every 15 s by default): they
	// would keep the firewall's entry alive through the idle check, as
	// an idle ssh session without them does not.
	lc := net.ListenConfig{KeepAlive: -1}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println(Ready)
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if err := answer(c); err != nil {
				fmt.Fprintln(os.Stderr, "tcp-check: connection from", c.RemoteAddr(), err)
			}
		}()
	}
}

// answer serves one connection: "hello" is echoed; "idle D" is
// acknowledged, and after D the listener sends "server", then reads
// "client" and answers "done".
func answer(c net.Conn) error {
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimSpace(line)
	if line == "hello" {
		_, err := c.Write([]byte("hello\n"))
		return err
	}
	d, err := time.ParseDuration(strings.TrimPrefix(line, "idle "))
	if err != nil {
		return fmt.Errorf("unexpected %q", line)
	}
	if _, err := c.Write([]byte("ok\n")); err != nil {
		return err
	}
	time.Sleep(d)
	if _, err := c.Write([]byte("server\n")); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(6 * ioTimeout))
	if line, err = r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "client" {
		return fmt.Errorf("after the idle time: %q, %v", line, err)
	}
	_, err = c.Write([]byte("done\n"))
	return err
}

// dial connects to addr and exchanges a line, or with idle the idle
// check's lines.
func dial(addr string, idle time.Duration) error {
	d := net.Dialer{Timeout: ioTimeout, KeepAlive: -1}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	expect := func(want string, within time.Duration) error {
		c.SetReadDeadline(time.Now().Add(within))
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("waiting for %q: %w", want, err)
		}
		if got := strings.TrimSpace(line); got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
	if idle == 0 {
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return err
		}
		return expect("hello", ioTimeout)
	}
	if _, err := fmt.Fprintf(c, "idle %v\n", idle); err != nil {
		return err
	}
	if err := expect("ok", ioTimeout); err != nil {
		return err
	}
	// The listener's segment leaves first: the direction a firewall in
	// front of the dialer may have forgotten. The dialer's follows a
	// second later and opens the way again if it had.
	time.Sleep(idle + time.Second)
	if _, err := c.Write([]byte("client\n")); err != nil {
		return err
	}
	if err := expect("server", 6*ioTimeout); err != nil {
		return fmt.Errorf("after %v idle: %w", idle, err)
	}
	return expect("done", 6*ioTimeout)
}

// Listener is a `testbed tcp-check listen` running in a namespace.
type Listener struct{ p *netns.Process }

// Listen starts self as a tcp-check listener on addr in ns.
func Listen(ns netns.Namespace, self string, addr netip.AddrPort) (*Listener, error) {
	p, err := netns.Start(ns.Command(self, "tcp-check", "listen", addr.String()), "tcp-check listener on "+addr.String(), Ready, 1, 20*time.Second)
	if err != nil {
		return nil, err
	}
	return &Listener{p}, nil
}

// Stop ends the listener.
func (l *Listener) Stop() { l.p.Kill() }

// Dial runs self as a tcp-check dialer from ns to addr; nil when the
// exchange completed.
func Dial(ns netns.Namespace, self string, addr netip.AddrPort, idle time.Duration) error {
	args := []string{self, "tcp-check", "dial"}
	if idle > 0 {
		args = append(args, "-idle", idle.String())
	}
	out, err := ns.Command(append(args, addr.String())...).CombinedOutput()
	if err != nil {
		// tcp-check's own words say what failed; the command line
		// (a long path of this program) says nothing.
		if msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "tcp-check: ")); msg != "" {
			return errors.New(msg)
		}
		return err
	}
	return nil
}

var received = regexp.MustCompile(`(\d+) received`)

// Ping sends count echoes with the echo id id from ns to to, 0.2 s
// apart, and returns how many were answered.
func Ping(ns netns.Namespace, to netip.Addr, id, count int) (int, error) {
	out, err := ns.Command("ping", "-6", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2",
		"-w", strconv.Itoa(count+4), "-e", strconv.Itoa(id), to.String()).CombinedOutput()
	m := received.FindSubmatch(out)
	if m == nil {
		if err == nil {
			err = errors.New("no summary")
		}
		return 0, fmt.Errorf("ping %s from %s: %w: %s", to, ns, err, strings.TrimSpace(string(out)))
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n, nil
}

// Counters reads the kernel's SNMP counters names in ns (nstat's names,
// e.g. TcpRetransSegs, TcpExtTCPSACKReorder), leaving nstat's history
// alone.
func Counters(ns netns.Namespace, names ...string) (map[string]uint64, error) {
	out, err := ns.Output(append([]string{"nstat", "-a", "-s", "-z"}, names...)...)
	if err != nil {
		return nil, err
	}
	return parseNstat(string(out), names), nil
}

// parseNstat reads nstat's "Name value rate" lines; names it does not
// list count 0 (a kernel without the counter).
func parseNstat(out string, names []string) map[string]uint64 {
	got := make(map[string]uint64, len(names))
	for _, n := range names {
		got[n] = 0
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if _, ok := got[f[0]]; ok {
			got[f[0]], _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	return got
}

// Sum is the sum of the counters of m.
func Sum(m map[string]uint64) uint64 {
	var s uint64
	for _, v := range m {
		s += v
	}
	return s
}
