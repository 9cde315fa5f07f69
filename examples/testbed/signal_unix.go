//go:build unix

package main

import (
	"os"
	"syscall"
)

// countersSignal asks a running wire forwarder or flowtun for its counters.
var countersSignal os.Signal = syscall.SIGUSR1

// askCounters sends countersSignal to a child process.
func askCounters(p *os.Process) error { return p.Signal(countersSignal) }
