package conn

import (
	"errors"
	"fmt"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// portSteer hands every UDP datagram addressed to a port of our range to
// the canonical socket, with a BPF sk_lookup program attached to the
// network namespace (Linux 5.9; CAP_BPF and CAP_NET_ADMIN, which a VPN
// holds for its TUN device anyway). The reader then takes a whole
// recvmmsg(2) batch from one socket, as without ports, where otherwise
// each port's socket holds a few datagrams of the batch. The ports'
// sockets stay bound, to send and to keep the ports ours; nothing
// reaches them, and the reader reads the canonical socket alone.
// IPV6_ORIGDSTADDR tells it the port each datagram was sent to.
//
// The program runs for every datagram to a local address of the
// namespace, after the lookup of connected sockets (one that matches a
// datagram exactly still takes it first, which is why the ports' sockets
// are never connected) and before that of bound ones; it looks at UDP to
// our ports only, which our sockets would have taken anyway.
// See https://docs.kernel.org/bpf/prog_sk_lookup.html.
//
// The program can hand a datagram only to a socket of a BPF socket map,
// and the kernel gives such a socket a receive hook of its own
// (udp_bpf_recvmsg: two atomic reference counts and an indirect call per
// datagram read, about 3% of the reader's time). So where it can, the
// map holds a decoy instead: a socket on the canonical port that shares
// it with the canonical socket (SO_REUSEPORT) and is never read. A
// datagram the program hands to the decoy goes on to their reuseport
// group, whose classic BPF program picks the canonical socket, which is
// read with no hook (openDecoy).
type portSteer struct {
	link  int // closing it detaches the program
	decoy int // the decoy's descriptor, or -1: the map holds the canonical socket
}

// steerPorts steers the datagrams to the ports of socks[1:] (a port
// range's sockets, in order) to socks[0], which it has report each
// datagram's port, or returns an error where the kernel or the process's
// privileges do not allow it: the reader then reads every socket.
func steerPorts(socks []*net.UDPConn) (*portSteer, error) {
	first := socks[1].LocalAddr().(*net.UDPAddr).Port
	last := socks[len(socks)-1].LocalAddr().(*net.UDPAddr).Port
	rc, err := socks[0].SyscallConn()
	if err != nil {
		return nil, err
	}
	var s *portSteer
	var steerErr error
	if err := rc.Control(func(fd uintptr) {
		// Before the program runs: a steered datagram must carry its port.
		if steerErr = setOrigDst(int(fd), 1); steerErr != nil {
			steerErr = os.NewSyscallError("setsockopt IPV6_RECVORIGDSTADDR", steerErr)
			return
		}
		target, decoy := int(fd), openDecoy(socks[0])
		if decoy >= 0 {
			target = decoy
		}
		if s, steerErr = newPortSteer(target, uint16(first), uint16(last)); steerErr != nil {
			if decoy >= 0 {
				unix.Close(decoy)
			}
			setOrigDst(int(fd), 0)
			return
		}
		s.decoy = decoy
		// IPV6_ORIGDSTADDR carries the address IPV6_PKTINFO would: one
		// control message less to build and read per datagram. The
		// kernel builds them when the datagram is read, so none read
		// from now on lacks its address.
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 0)
	}); err != nil {
		return nil, err
	}
	return s, steerErr
}

// setOrigDst turns IPV6_ORIGDSTADDR (and IP_ORIGDSTADDR, for IPv4 on a
// dual-stack socket) on or off.
func setOrigDst(fd, on int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR, on); err != nil {
		return err
	}
	// A v6-only socket refuses it and never sees IPv4.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR, on)
	return nil
}

// newPortSteer attaches the steering program for ports first to last
// (inclusive) to the calling thread's network namespace, with target (a
// bound UDP socket's descriptor: the decoy, or the canonical socket) as
// the socket it hands the datagrams to. The caller sets decoy.
func newPortSteer(target int, first, last uint16) (*portSteer, error) {
	sockmap, err := bpfMapCreate()
	if err != nil {
		return nil, err
	}
	defer unix.Close(sockmap)
	key, value := uint32(0), uint64(target)
	if err := bpfMapUpdate(sockmap, unsafe.Pointer(&key), unsafe.Pointer(&value)); err != nil {
		return nil, err
	}
	prog, err := bpfProgLoad(steerProgram(sockmap, first, last))
	if err != nil {
		return nil, err
	}
	defer unix.Close(prog)
	ns, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open the network namespace", err)
	}
	defer unix.Close(ns)
	link, err := bpfLinkCreate(prog, ns)
	if err != nil {
		return nil, err
	}
	return &portSteer{link: link, decoy: -1}, nil
}

func (s *portSteer) close() {
	unix.Close(s.link)
	if s.decoy >= 0 {
		unix.Close(s.decoy)
	}
}

// openDecoy opens portSteer's decoy for the canonical socket uc, or
// returns -1 where it cannot: uc must be bound with SO_REUSEPORT still
// set (Listen opens it so where it may steer, and clears it after), and
// the kernel must take the reuseport group's program. The group's first
// socket is uc, which made the group when it bound alone to its port
// (openSocket); the program picks it for every datagram.
func openDecoy(uc *net.UDPConn) int {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1
	}
	// The classic BPF program "return 0": the group's socket at index 0.
	pick := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	prog := unix.SockFprog{Len: uint16(len(pick)), Filter: &pick[0]}
	la := uc.LocalAddr().(*net.UDPAddr)
	if unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0) != nil ||
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) != nil ||
		unix.Bind(fd, &unix.SockaddrInet6{Port: la.Port}) != nil ||
		unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &prog) != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// bpfInsn is one eBPF instruction (struct bpf_insn).
type bpfInsn struct {
	code uint8
	regs uint8 // dst in the low nibble, src in the high
	off  int16
	imm  int32
}

func insn(code, dst, src uint8, off int16, imm int32) bpfInsn {
	return bpfInsn{code: code, regs: dst | src<<4, off: off, imm: imm}
}

// The eBPF opcodes and helpers the program uses (include/uapi/linux/bpf.h).
const (
	bpfMovReg    = 0xbf // BPF_ALU64|BPF_MOV|BPF_X
	bpfMovImm    = 0xb7 // BPF_ALU64|BPF_MOV|BPF_K
	bpfAddImm    = 0x07 // BPF_ALU64|BPF_ADD|BPF_K
	bpfLoadWord  = 0x61 // BPF_LDX|BPF_MEM|BPF_W
	bpfStoreWord = 0x62 // BPF_ST|BPF_MEM|BPF_W
	bpfLoadImm64 = 0x18 // BPF_LD|BPF_DW|BPF_IMM
	bpfJeqImm    = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
	bpfJneImm    = 0x55
	bpfJgtImm    = 0x25
	bpfJltImm    = 0xa5
	bpfCall      = 0x85
	bpfExit      = 0x95

	bpfFuncMapLookup = 1
	bpfFuncSkRelease = 86
	bpfFuncSkAssign  = 124

	// Offsets in struct bpf_sk_lookup.
	skLookupProtocol  = 12
	skLookupLocalPort = 60 // host byte order

	skPass = 1
)

// steerProgram is, in C:
//
//	if (ctx->protocol != IPPROTO_UDP || ctx->local_port < first || ctx->local_port > last)
//		return SK_PASS;
//	sk = bpf_map_lookup_elem(&sockmap, &zero);
//	if (sk) {
//		bpf_sk_assign(ctx, sk, 0);
//		bpf_sk_release(sk);
//	}
//	return SK_PASS;
//
// SK_PASS without an assigned socket lets the kernel's own lookup run.
func steerProgram(sockmap int, first, last uint16) []bpfInsn {
	const r0, r1, r2, r3, r6, r7, r10 = 0, 1, 2, 3, 6, 7, 10
	const pass = 20 // the index of the final "r0 = SK_PASS"
	prog := []bpfInsn{
		0:  insn(bpfMovReg, r6, r1, 0, 0),
		1:  insn(bpfLoadWord, r2, r6, skLookupProtocol, 0),
		2:  insn(bpfJneImm, r2, 0, pass-3, unix.IPPROTO_UDP),
		3:  insn(bpfLoadWord, r2, r6, skLookupLocalPort, 0),
		4:  insn(bpfJltImm, r2, 0, pass-5, int32(first)),
		5:  insn(bpfJgtImm, r2, 0, pass-6, int32(last)),
		6:  insn(bpfStoreWord, r10, 0, -4, 0),
		7:  insn(bpfLoadImm64, r1, unix.BPF_PSEUDO_MAP_FD, 0, int32(sockmap)),
		8:  {},
		9:  insn(bpfMovReg, r2, r10, 0, 0),
		10: insn(bpfAddImm, r2, 0, 0, -4),
		11: insn(bpfCall, 0, 0, 0, bpfFuncMapLookup),
		12: insn(bpfJeqImm, r0, 0, pass-13, 0),
		13: insn(bpfMovReg, r7, r0, 0, 0),
		14: insn(bpfMovReg, r1, r6, 0, 0),
		15: insn(bpfMovReg, r2, r7, 0, 0),
		16: insn(bpfMovImm, r3, 0, 0, 0),
		17: insn(bpfCall, 0, 0, 0, bpfFuncSkAssign),
		18: insn(bpfMovReg, r1, r7, 0, 0),
		19: insn(bpfCall, 0, 0, 0, bpfFuncSkRelease),
		20: insn(bpfMovImm, r0, 0, 0, skPass),
		21: insn(bpfExit, 0, 0, 0, 0),
	}
	return prog
}

func bpfSyscall(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// bpfMapCreate makes a one-entry SOCKMAP.
func bpfMapCreate() (int, error) {
	attr := struct {
		mapType, keySize, valueSize, maxEntries, mapFlags uint32
	}{unix.BPF_MAP_TYPE_SOCKMAP, 4, 8, 1, 0}
	fd, err := bpfSyscall(unix.BPF_MAP_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err != nil {
		return -1, fmt.Errorf("create a BPF socket map: %w", err)
	}
	return fd, nil
}

func bpfMapUpdate(m int, key, value unsafe.Pointer) error {
	attr := struct {
		mapFd, _          uint32
		key, value, flags uint64
	}{mapFd: uint32(m), key: uint64(uintptr(key)), value: uint64(uintptr(value))}
	if _, err := bpfSyscall(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return fmt.Errorf("put the socket in the BPF socket map: %w", err)
	}
	return nil
}

// bpfProgLoad loads prog as an sk_lookup program; the verifier's log is
// in the error where it refuses it.
func bpfProgLoad(prog []bpfInsn) (int, error) {
	license := []byte("Dual MIT/GPL\x00")
	log := make([]byte, 4096)
	attr := struct {
		progType, insnCnt           uint32
		insns, license              uint64
		logLevel, logSize           uint32
		logBuf                      uint64
		kernVersion, progFlags      uint32
		progName                    [16]byte
		progIfindex, expectedAttach uint32
	}{
		progType:       unix.BPF_PROG_TYPE_SK_LOOKUP,
		insnCnt:        uint32(len(prog)),
		insns:          uint64(uintptr(unsafe.Pointer(&prog[0]))),
		license:        uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel:       1,
		logSize:        uint32(len(log)),
		logBuf:         uint64(uintptr(unsafe.Pointer(&log[0]))),
		expectedAttach: unix.BPF_SK_LOOKUP,
	}
	copy(attr.progName[:], "flowspread_port")
	fd, err := bpfSyscall(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err != nil {
		if n := cstrlen(log); n > 0 && !errors.Is(err, unix.EPERM) {
			return -1, fmt.Errorf("load the port-steering BPF program: %w (verifier: %s)", err, log[:n])
		}
		return -1, fmt.Errorf("load the port-steering BPF program: %w", err)
	}
	return fd, nil
}

func cstrlen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

func bpfLinkCreate(prog, netns int) (int, error) {
	attr := struct {
		progFd, targetFd, attachType, flags uint32
	}{uint32(prog), uint32(netns), unix.BPF_SK_LOOKUP, 0}
	fd, err := bpfSyscall(unix.BPF_LINK_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err != nil {
		return -1, fmt.Errorf("attach the port-steering BPF program to the network namespace: %w", err)
	}
	return fd, nil
}
