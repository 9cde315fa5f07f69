package conn

import (
	"time"

	"golang.org/x/sys/unix"
)

// linkPoll is how often followLink looks at the interface while it is
// down or gone: well within the second a flap may cost.
const linkPoll = 50 * time.Millisecond

// An AF_PACKET socket bound to an interface lives through the interface's
// flaps but not its deletion. On link down the kernel unhooks the socket
// and reports ENETDOWN once; on link up it hooks it again by itself. On
// deletion it unbinds the socket (its ifindex becomes -1), so an
// interface re-created under the same name (a VM's tap, a USB NIC, a
// veth) is a new device the socket never hears of. See packet_notifier in
// net/packet/af_packet.c.
//
// So after ENETDOWN the receiver watches the interface by name until it
// is up again and the socket is bound to it, and binds the socket to the
// new device when the name comes back with another index. The filter
// stays attached across bind(2). Readers just keep waiting meanwhile:
// close and deadlines unblock them as ever.

// followLinkOnce starts followLink unless it runs already, in which case
// it tells it the link went down again.
func (r *rawReceiver) followLinkOnce() {
	r.linkEvent.Store(true)
	if r.following.CompareAndSwap(false, true) {
		go r.followLink()
	}
}

// followLink polls the interface until the socket receives from it again,
// rebinding the socket if the interface was re-created. It returns early
// when the receiver closes. Only this path allocates, and it is rare.
func (r *rawReceiver) followLink() {
	tick := time.NewTicker(linkPoll)
	defer tick.Stop()
	for {
		r.linkEvent.Store(false)
		for !r.relink() {
			select {
			case <-r.quit:
				r.following.Store(false)
				return
			case <-tick.C:
			}
		}
		r.following.Store(false)
		// A link event between relink's last look and the Store above
		// found following still set and started nobody: look again.
		if !r.linkEvent.Load() || !r.following.CompareAndSwap(false, true) {
			return
		}
	}
}

// relink reports whether the socket is bound to the interface named
// r.ifname and that interface is up, binding the socket to it first if
// the name now belongs to another device. It reports true once the
// receiver is closed, so that followLink stops.
func (r *rawReceiver) relink() bool {
	ok := true
	err := r.rc.Control(func(fd uintptr) {
		s := int(fd)
		ifr, err := unix.NewIfreq(r.ifname)
		if err != nil {
			return // a name the open accepted; cannot happen
		}
		if unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr) != nil {
			ok = false // gone: wait for it to come back
			return
		}
		index := int(ifr.Uint32())
		sa, err := unix.Getsockname(s)
		if ll, isLL := sa.(*unix.SockaddrLinklayer); err == nil && isLL && ll.Ifindex != index {
			// Frames of the new device must pass linkLayerOK as soon as
			// the socket is bound to it.
			r.ifindex.Store(int32(index))
			bind := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: index}
			if unix.Bind(s, bind) != nil {
				ok = false // the device vanished again: try later
				return
			}
			r.rebound.Add(1)
		}
		if unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr) != nil || ifr.Uint16()&unix.IFF_UP == 0 {
			ok = false
		}
	})
	return err != nil || ok
}
