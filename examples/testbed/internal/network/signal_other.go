//go:build !unix

package network

import (
	"errors"
	"fmt"
	"os"
)

// CountersSignal is nil where there is no SIGUSR1: no signal asks for
// counters, and the wire forwarder writes them only when it stops.
var CountersSignal os.Signal

// AskCounters fails: the testbed runs on Linux only.
func AskCounters(interface{ Signal(os.Signal) error }) error {
	return fmt.Errorf("asking a process for its counters needs SIGUSR1, which only Unix has (the testbed runs on Linux only): %w", errors.ErrUnsupported)
}
