//go:build unix

package main

import (
	"os"
	"syscall"
)

// statsSignals ask a running tunnel for its counters.
var statsSignals = []os.Signal{syscall.SIGUSR1}
