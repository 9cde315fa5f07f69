//go:build !linux

package host

import "github.com/flowspread/flowspread/conn"

// Diagnose needs Linux: elsewhere it reports one blocking finding.
func Diagnose(cfg conn.Config) Report {
	return Report{Findings: []Finding{{
		Check:    CheckConfig,
		Severity: Block,
		Detail:   "spreading needs Linux (FREEBIND, AnyIP local routes, AF_PACKET); this system is not Linux",
	}}}
}
