package network

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bpfInsn is struct bpf_insn: opcode, destination and source registers
// (4 bits each), offset, immediate.
type bpfInsn struct {
	Code uint8
	Regs uint8
	Off  int16
	Imm  int32
}

// bpfProgLoadAttr is the BPF_PROG_LOAD part of union bpf_attr, up to
// prog_name; the kernel takes the rest as zero.
type bpfProgLoadAttr struct {
	ProgType    uint32
	InsnCount   uint32
	Insns       uint64
	License     uint64
	LogLevel    uint32
	LogSize     uint32
	LogBuf      uint64
	KernVersion uint32
	ProgFlags   uint32
	Name        [16]byte
}

const (
	bpfFuncSetHashInvalid = 41 // BPF_FUNC_set_hash_invalid, include/uapi/linux/bpf.h
	tcActOK               = 0  // TC_ACT_OK: the packet goes on
)

// clearHashProgram calls bpf_set_hash_invalid(skb), which zeroes skb->hash
// and its "computed" flags so that the next user (the router's qdisc)
// computes it afresh from the headers, and lets the packet pass.
var clearHashProgram = []bpfInsn{
	{Code: unix.BPF_JMP | unix.BPF_CALL, Imm: bpfFuncSetHashInvalid}, // r1 is the skb on entry
	{Code: unix.BPF_ALU64 | unix.BPF_MOV | unix.BPF_K, Imm: tcActOK}, // r0 = TC_ACT_OK
	{Code: unix.BPF_JMP | unix.BPF_EXIT},
}

// loadClearHash loads clearHashProgram as a tc classifier and returns its
// file descriptor.
func loadClearHash() (int, error) {
	license := []byte("Apache-2.0\x00") // the helper is not GPL-only
	log := make([]byte, 4096)
	attr := bpfProgLoadAttr{
		ProgType:  unix.BPF_PROG_TYPE_SCHED_CLS,
		InsnCount: uint32(len(clearHashProgram)),
		Insns:     uint64(uintptr(unsafe.Pointer(&clearHashProgram[0]))),
		License:   uint64(uintptr(unsafe.Pointer(&license[0]))),
		LogLevel:  1,
		LogSize:   uint32(len(log)),
		LogBuf:    uint64(uintptr(unsafe.Pointer(&log[0]))),
	}
	copy(attr.Name[:], "fs_clear_hash")
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if errno != 0 {
		msg := unix.ByteSliceToString(log)
		if msg != "" {
			return -1, fmt.Errorf("loading the BPF program: %w (verifier: %s)", errno, msg)
		}
		return -1, fmt.Errorf("loading the BPF program: %w", errno)
	}
	return int(fd), nil
}

// attachClearHash attaches the hash-clearing program to the ingress of
// interface ifname of this namespace, under a clsact qdisc it adds.
func attachClearHash(ifname string) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifname, err)
	}
	fd, err := loadClearHash()
	if err != nil {
		return err
	}
	defer unix.Close(fd) // the filter keeps its own reference
	clsact := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: link.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_CLSACT,
	}}
	if err := netlink.QdiscReplace(clsact); err != nil {
		return fmt.Errorf("adding a clsact qdisc to %s (needs sch_clsact): %w", ifname, err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: link.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           fd,
		Name:         "fs_clear_hash",
		DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return fmt.Errorf("attaching the BPF program to %s's ingress (needs cls_bpf): %w", ifname, err)
	}
	return nil
}
