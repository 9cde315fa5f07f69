//go:build unix

package network

import (
	"os"
	"syscall"
)

// CountersSignal asks a running wire forwarder or flowtun for its counters.
var CountersSignal os.Signal = syscall.SIGUSR1

// AskCounters sends CountersSignal to a child process.
func AskCounters(p interface{ Signal(os.Signal) error }) error { return p.Signal(CountersSignal) }
