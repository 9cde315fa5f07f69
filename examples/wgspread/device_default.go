//go:build !linux

package main

import (
	"errors"
	"fmt"
	"log"
)

// serve reports that wgspread runs on Linux only: the conn's AnyIP socket
// and local route are Linux features.
func serve(opts options, logger *log.Logger) error {
	return fmt.Errorf("wgspread runs on Linux only: %w", errors.ErrUnsupported)
}
