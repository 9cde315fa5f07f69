package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestTinyExperiment runs the direct and control modes on this machine's
// own kernel, when it has what they need; TestExperimentInVM covers the
// same in the VM for kernels that do not.
func TestTinyExperiment(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces: run the tests as root")
	}
	if testing.Short() {
		t.Skip("runs two modes for about half a minute; skipped with -short")
	}
	cfg, err := parseFlags([]string{"-modes", "direct,control", "-rate", "10", "-d", "6s", "-warmup", "2s", "-plots=false"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if missing := missingTools(cfg); len(missing) > 0 {
		t.Skipf("missing %s: run scripts/install-deps", strings.Join(missing, ", "))
	}
	lack, err := hostLacks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if lack != "" {
		t.Skipf("this kernel lacks %s; TestExperimentInVM runs the experiment in the VM instead", lack)
	}
	var log bytes.Buffer
	e := &experiment{cfg: cfg, self: os.Args[0], log: &log} // TestMain serves as the wire
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := e.run(ctx)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	checkDirectAndControl(t, rep, table.String()+log.String())
}
