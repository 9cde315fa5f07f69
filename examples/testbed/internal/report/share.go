package report

import (
	"fmt"
	"io"

	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
)

// HostShareSlack is how far above the direct mode's share the spreading
// tunnel's share may be at cake: a tunnel that takes more than its host's
// share takes it from the other hosts behind the same router (issue 13:
// never the one who ruins the family's video call).
const HostShareSlack = 0.05

// HostShare is the cake share check of the spread mode: its tunnel share
// against the direct mode's, which carries the same flows with no tunnel,
// at the same bottleneck in the same run. Cake in its host-fair modes
// counts every outer address as a host, so a tunnel spreading over many
// addresses outweighs the hosts beside it; the check says whether it did.
type HostShare struct {
	Share       number `json:"tunnel_share"`
	DirectShare number `json:"direct_share"`
	Limit       number `json:"limit"` // DirectShare + HostShareSlack
	Met         bool   `json:"met"`
}

// CheckHostShare gives the spread row its cake share check, when the
// bottleneck is cake and the direct and spread rows were both measured.
func (rep *Report) CheckHostShare() {
	if !shaping.Kind(rep.Config.Qdisc).Cake() {
		return
	}
	direct, spread := rep.row("direct"), rep.row("spread")
	if direct == nil || spread == nil || !measured(direct) || !measured(spread) {
		return
	}
	limit := direct.TunnelShare + HostShareSlack
	spread.HostShare = &HostShare{Share: spread.TunnelShare, DirectShare: direct.TunnelShare,
		Limit: limit, Met: spread.TunnelShare <= limit}
}

// row returns the row of mode name, or nil.
func (rep *Report) row(name string) *ModeResult {
	for i := range rep.Modes {
		if rep.Modes[i].Mode == name {
			return &rep.Modes[i]
		}
	}
	return nil
}

// measured says a row has figures: ok, or invalid but measured.
func measured(r *ModeResult) bool { return r.Status == StatusOK || r.Status == StatusInvalid }

// missedHostShare checks the cake share target of the spread mode, which
// needs the direct mode beside it.
func (rep *Report) missedHostShare() string {
	spread := rep.row("spread")
	if !shaping.Kind(rep.Config.Qdisc).Cake() || spread == nil || spread.Status == StatusSkipped {
		return ""
	}
	h := spread.HostShare
	switch {
	case h == nil:
		return fmt.Sprintf("at %s the spread mode's share is judged against the direct mode's, which did not run or was not measured: run -modes direct,spread", rep.Config.Qdisc)
	case !h.Met:
		return fmt.Sprintf("the spread mode took more than its host's share at %s: tunnel share %.2f, the same flows with no tunnel %.2f (at most %.2f allowed)",
			rep.Config.Qdisc, float64(h.Share), float64(h.DirectShare), float64(h.Limit))
	}
	return ""
}

// writeHostShare prints the spread row's cake share check.
func (r ModeResult) writeHostShare(w io.Writer) {
	h := r.HostShare
	if h == nil {
		return
	}
	status := "met"
	if !h.Met {
		status = "NOT met"
	}
	fmt.Fprintf(w, "%s: host share within direct + %.2f %s: tunnel share %.2f, direct mode's %.2f (at most %.2f)\n",
		r.label(), HostShareSlack, status, float64(h.Share), float64(h.DirectShare), float64(h.Limit))
}
