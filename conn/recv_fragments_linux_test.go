package conn

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// TestFragmentedDatagramsArriveWhole sends datagrams larger than the
// 1500-byte MTU of a veth from a plain UDP socket, which the sending
// kernel fragments (nothing sets IPV6_DONTFRAG), and requires each
// backend to deliver them whole: the AnyIP backend's kernel reassembles
// them, the Raw backend must.
func TestFragmentedDatagramsArriveWhole(t *testing.T) {
	sizes := []int{1600, 9000, 65535 - udpHeaderLen}
	for _, be := range []struct {
		name string
		recv Receive
	}{{"anyip", AnyIP{}}, {"raw", Raw{Interface: "vb"}}} {
		t.Run(be.name, func(t *testing.T) {
			topo := newRawTopology(t)
			if _, ok := be.recv.(AnyIP); ok {
				topo.b.Run(t, "ip", "-6", "route", "add", "local", topo.prefix.String(), "dev", "lo")
			}
			var c *FlowSpreadConn
			cfg := Config{Range: Range{Prefix: topo.prefix}, Port: testPort, AcceptUnknown: true, Receive: be.recv}
			if err := topo.b.Do(func() (err error) { c, err = Listen(cfg); return err }); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			dst := netip.AddrPortFrom(inPrefix, testPort)
			send := dialUDP(t, topo.a, netip.AddrPortFrom(topo.aAddr, 0), dst)

			buf := make([]byte, 65536)
			for i, size := range sizes {
				payload := make([]byte, size)
				for j := range payload {
					payload[j] = byte(j*31 + i)
				}
				if _, err := send.Write(payload); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, info, err := c.ReadMsg(buf)
				if err != nil {
					t.Fatalf("%d bytes: %v (stats %+v)", size, err, c.Stats())
				}
				if !bytes.Equal(buf[:n], payload) {
					t.Errorf("%d bytes sent, %d read, or their bytes differ", size, n)
				}
				if info.OuterSrc != localAddrPort(send) || info.OuterDst != dst {
					t.Errorf("%d bytes: %v -> %v, want %v -> %v", size, info.OuterSrc, info.OuterDst, localAddrPort(send), dst)
				}
			}
			st := c.Stats()
			if _, raw := be.recv.(Raw); raw && st.RecvReassembled != uint64(len(sizes)) {
				t.Errorf("RecvReassembled %d, want %d", st.RecvReassembled, len(sizes))
			}
			if st.RecvFragmentsDropped+st.RecvTruncated+st.RecvBadChecksum != 0 {
				t.Errorf("drops: %+v", st)
			}
		})
	}
}
