//go:build !unix

package main

import (
	"errors"
	"fmt"
	"os"
)

// countersSignal is nil where there is no SIGUSR1: no signal asks for
// counters, and the wire forwarder writes them only when it stops.
var countersSignal os.Signal

// askCounters fails: the testbed runs on Linux only.
func askCounters(*os.Process) error {
	return fmt.Errorf("asking a process for its counters needs SIGUSR1, which only Unix has (the testbed runs on Linux only): %w", errors.ErrUnsupported)
}
