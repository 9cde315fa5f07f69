package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
)

// startProfile starts a CPU profile of the whole run, written to
// PREFIX.PID.pprof when FLOWTUN_CPUPROFILE=PREFIX is set (the process ID
// keeps two ends started with one environment apart), for `go tool
// pprof`. The returned function stops it; it does nothing when no profile
// was asked for.
func startProfile() (stop func() error, err error) {
	prefix := os.Getenv("FLOWTUN_CPUPROFILE")
	if prefix == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(prefix + "." + strconv.Itoa(os.Getpid()) + ".pprof")
	if err != nil {
		return nil, fmt.Errorf("FLOWTUN_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("FLOWTUN_CPUPROFILE: start the CPU profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
