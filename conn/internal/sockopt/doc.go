// Package sockopt sets, and so probes, the socket options of a
// FlowSpreadConn's UDP socket. [github.com/flowspread/flowspread/conn]'s
// Listen sets them on its socket; [github.com/flowspread/flowspread/conn/host]'s
// Diagnose sets them on a throwaway socket and reports what the kernel
// refused. One function per side (send, receive), used by both, so the
// diagnosis cannot drift from what Listen does (as wireguard-go's
// features_linux.go).
package sockopt
