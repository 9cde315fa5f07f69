package host

import (
	"strconv"
	"strings"

	"github.com/flowspread/flowspread/conn"
)

// settings is what Diagnose reads of a [conn.Config].
type settings struct {
	conn.Config
	// Interface is the [conn.Raw] backend's; empty for [conn.AnyIP].
	Interface string
}

func settingsOf(cfg conn.Config) settings {
	s := settings{Config: cfg}
	if r, ok := cfg.Receive.(conn.Raw); ok {
		s.Interface = r.Interface
	}
	return s
}

// Severity grades a [Finding].
type Severity uint8

const (
	// OK: the check passed.
	OK Severity = iota
	// Info: nothing wrong that Diagnose can see; something to know.
	Info
	// Warn: it works, but worse than it could, or something may get in
	// the way.
	Warn
	// Block: spreading will not work until this is fixed.
	Block
)

func (s Severity) String() string {
	switch s {
	case OK:
		return "ok"
	case Info:
		return "info"
	case Warn:
		return "warn"
	case Block:
		return "BLOCK"
	}
	return "severity(" + strconv.Itoa(int(s)) + ")"
}

// Finding is the result of one check.
type Finding struct {
	// Check names what was checked, e.g. "local route".
	Check string
	Severity
	// Detail says what was found, in plain words.
	Detail string
	// Fix is the command (or step) that fixes it; empty when nothing needs
	// doing.
	Fix string
}

// Report is what [Diagnose] found, one finding per check in the order they
// ran.
type Report struct {
	Findings []Finding
}

// Blocking reports whether any finding blocks spreading.
func (r Report) Blocking() bool {
	for _, f := range r.Findings {
		if f.Severity == Block {
			return true
		}
	}
	return false
}

// Find returns the first finding of the named check.
func (r Report) Find(check string) (Finding, bool) {
	for _, f := range r.Findings {
		if f.Check == check {
			return f, true
		}
	}
	return Finding{}, false
}

// String formats the report for people, one finding per paragraph, with
// each fix on its own line.
func (r Report) String() string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString("[")
		b.WriteString(f.Severity.String())
		b.WriteString("] ")
		b.WriteString(f.Check)
		b.WriteString(": ")
		b.WriteString(f.Detail)
		b.WriteString("\n")
		if f.Fix != "" {
			b.WriteString("    fix: ")
			b.WriteString(f.Fix)
			b.WriteString("\n")
		}
	}
	return b.String()
}

// The names of Diagnose's checks, for [Report.Find].
const (
	CheckConfig       = "config"
	CheckIPv6         = "ipv6"
	CheckLocalRoute   = "local route"
	CheckReachability = "reachability"
	CheckNeighbours   = "neighbour proxies"
	CheckInterface    = "interface"
	CheckCapabilities = "capabilities"
	CheckFreebind     = "source addresses"
	CheckGSO          = "gso"
	CheckGRO          = "gro"
	CheckPort         = "port"
	CheckRPFilter     = "reverse path filter"
	CheckForwarding   = "forwarding"
	CheckMTU          = "mtu"
	CheckFlowLabel    = "flow label"
	CheckBuffers      = "socket buffers"
	CheckPacketInfo   = "packet info"
	CheckBatch        = "batch receive"
)
