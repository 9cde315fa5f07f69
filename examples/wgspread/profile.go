package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole run to
// PREFIX.INTERFACE.pprof when WGSPREAD_CPUPROFILE=PREFIX is set (one file
// per interface, so two ends started with one environment do not share
// one), for `go tool pprof`. The returned function stops it; it does
// nothing when no profile was asked for.
func startProfile(iface string) (stop func() error, err error) {
	prefix := os.Getenv("WGSPREAD_CPUPROFILE")
	if prefix == "" {
		return func() error { return nil }, nil
	}
	name := prefix + "." + iface + ".pprof"
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("WGSPREAD_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("WGSPREAD_CPUPROFILE: start the CPU profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}
