package testutil

import labns "github.com/flowspread/flowspread/internal/netns"

// LockedBuffer collects a process's output while it runs: exec.Cmd writes
// from its own goroutines while the test reads.
type LockedBuffer = labns.Output
