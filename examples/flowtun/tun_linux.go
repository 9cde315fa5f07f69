package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tunDevice is a layer-3 TUN interface: each read returns one inner IPv4
// or IPv6 packet, each write injects one (IFF_TUN|IFF_NO_PI, so no
// packet-information prefix).
//
// Reads and writes may run concurrently with each other; readBatch is
// owned by one goroutine. Close unblocks a pending read. The interface
// disappears, with its addresses and routes, when the device is closed.
type tunDevice struct {
	file *os.File
	rc   syscall.RawConn
	name string

	// read is doRead as a func value made once, so that RawConn.Read
	// does not allocate a closure per batch; bufs, sizes, got and err
	// carry its arguments and results.
	read  func(fd uintptr) bool
	bufs  [][]byte
	sizes []int
	got   int
	err   error
}

// openTUN creates the TUN interface name (the kernel picks a name for
// "") in the network namespace of the calling thread. It needs
// CAP_NET_ADMIN.
func openTUN(name string) (*tunDevice, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun (load the tun module, and run as root or with CAP_NET_ADMIN): %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("create TUN %q: needs CAP_NET_ADMIN: run as root or grant it with setcap: %w", name, err)
		}
		return nil, fmt.Errorf("create TUN %q (is the name taken by a device of another kind?): %w", name, err)
	}
	// A non-blocking descriptor joins Go's poller: reads park the
	// goroutine instead of a thread, and Close wakes them.
	d := &tunDevice{file: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name()}
	if d.rc, err = d.file.SyscallConn(); err != nil {
		d.file.Close()
		return nil, err
	}
	d.read = d.doRead
	return d, nil
}

// configure sets the interface's MTU, adds addrs (the host bits of each
// prefix name our address), brings it up and routes routes through it.
// It acts in the network namespace of the calling thread.
func (d *tunDevice) configure(mtu int, addrs, routes []netip.Prefix) error {
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("find %s: %w", d.name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", mtu, d.name, err)
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// A point-to-point link has no one to collide with:
			// skip duplicate address detection, use it at once.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add address %v to %s: %w", p, d.name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", d.name, err)
	}
	for _, p := range routes {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p.Masked())}
		if p.Addr().Is4() {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("add route %v via %s: %w", p.Masked(), d.name, err)
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// readBatch reads packets into bufs, one per buffer, and their lengths
// into sizes. It blocks until one packet is there, then takes the others
// already queued, up to len(bufs), without waiting for more. A packet
// longer than its buffer is cut short (sizes[i] == len(bufs[i])). It does
// not allocate.
func (d *tunDevice) readBatch(bufs [][]byte, sizes []int) (int, error) {
	d.bufs, d.sizes, d.got, d.err = bufs, sizes, 0, nil
	err := d.rc.Read(d.read)
	n, rerr := d.got, d.err
	d.bufs, d.sizes = nil, nil
	if n > 0 {
		return n, nil
	}
	if rerr != nil {
		return 0, rerr
	}
	return 0, err
}

func (d *tunDevice) doRead(fd uintptr) bool {
	for d.got < len(d.bufs) {
		n, err := unix.Read(int(fd), d.bufs[d.got])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// Nothing more queued: hand over what we have, or wait.
			return d.got > 0
		case err != nil:
			d.err = os.NewSyscallError("read "+d.name, err)
			return true
		}
		d.sizes[d.got] = n
		d.got++
	}
	return true
}

// write injects one inner packet. It does not allocate.
func (d *tunDevice) write(p []byte) (int, error) {
	return d.file.Write(p)
}

// Close closes the device, which removes the interface.
func (d *tunDevice) Close() error {
	return d.file.Close()
}
