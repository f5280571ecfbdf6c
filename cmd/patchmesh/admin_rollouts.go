package main

// Rollouts (`patchmesh admin rollouts …`).

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

func (a *admin) rolloutsCreate(ctx context.Context, args []string) error {
	fs := a.flags("rollouts create")
	tier := fs.String("tier", "", "the tier to roll out on")
	waves := fs.String("waves", "", `the waves, "DC-GLOB:DELAY[:PERCENT%],..."`)
	maxFailed := fs.String("gate-max-failed", "", "halt when this share of the open waves' machines failed (default 5%)")
	minReporting := fs.String("gate-min", "", "machines that must report before a wave opens (default 1)")
	soak := fs.String("soak", "", "how long the gate must hold before the next wave opens (default 10m)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *tier == "" || *waves == "" {
		return usagef("rollouts create needs --tier T and --waves SPEC")
	}
	body := map[string]any{"tier": *tier, "waves": *waves}
	if *maxFailed != "" {
		v, err := strconv.ParseFloat(strings.TrimSuffix(*maxFailed, "%"), 64)
		if err != nil {
			return usagef("--gate-max-failed: %q is not a percentage such as 5%%", *maxFailed)
		}
		body["max_failed_percent"] = v
	}
	if *minReporting != "" {
		v, err := strconv.ParseInt(*minReporting, 10, 64)
		if err != nil {
			return usagef("--gate-min: %q is not a number of machines", *minReporting)
		}
		body["min_reporting"] = v
	}
	if *soak != "" {
		d, err := time.ParseDuration(*soak)
		if err != nil {
			return usagef("--soak: %q is not a duration such as 10m", *soak)
		}
		body["soak_seconds"] = int64(d / time.Second)
	}
	api, pos, err := a.open("rollouts create", pos, "VERSION")
	if err != nil {
		return err
	}
	body["version"] = pos[0]
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/rollouts", nil, body)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error { return a.showRolloutText(raw) })
}

func (a *admin) rolloutsList(ctx context.Context, args []string) error {
	fs := a.flags("rollouts list")
	tier := fs.String("tier", "", "only this tier's rollouts")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("rollouts list", pos)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *tier != "" {
		q.Set("tier", *tier)
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/admin/rollouts", q, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct{ Rollouts []catalog.Rollout }
		if err := decode(raw, &out); err != nil {
			return err
		}
		rows := make([][]string, len(out.Rollouts))
		for i, r := range out.Rollouts {
			rows[i] = []string{r.ID, r.Tier, r.Version, string(r.State),
				fmt.Sprintf("%d/%d", len(r.Opened), len(r.Waves)), catalog.FormatWaves(r.Waves), r.Reason}
		}
		return table(a.stdout, []string{"ID", "TIER", "VERSION", "STATE", "OPEN", "WAVES", "REASON"}, rows)
	})
}

func (a *admin) rolloutsShow(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "rollouts show", args, "ID")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/admin/rollouts/"+pathEscape(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error { return a.showRolloutText(raw) })
}

func (a *admin) rolloutsHalt(ctx context.Context, args []string) error {
	fs := a.flags("rollouts halt")
	reason := fs.String("reason", "", "why, shown with the rollout")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, pos, err := a.open("rollouts halt", pos, "ID")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/rollouts/"+pathEscape(pos[0])+"/halt", nil, map[string]string{"reason": *reason})
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error { return a.showRolloutText(raw) })
}

func (a *admin) rolloutsResume(ctx context.Context, args []string) error {
	return a.rolloutVerb(ctx, "resume", args)
}

func (a *admin) rolloutsAbort(ctx context.Context, args []string) error {
	return a.rolloutVerb(ctx, "abort", args)
}

func (a *admin) rolloutVerb(ctx context.Context, verb string, args []string) error {
	api, pos, err := a.prepare(ctx, "rollouts "+verb, args, "ID")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/rollouts/"+pathEscape(pos[0])+"/"+verb, nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error { return a.showRolloutText(raw) })
}

// showRolloutText writes one rollout for a person: its plan, each wave
// and whether it is open, and the reason of a halt.
func (a *admin) showRolloutText(raw []byte) error {
	var r catalog.Rollout
	if err := decode(raw, &r); err != nil {
		return err
	}
	w := a.stdout
	fmt.Fprintf(w, "Rollout %s: version %s on tier %s, %s\n", r.ID, r.Version, r.Tier, r.State)
	if r.Reason != "" {
		fmt.Fprintf(w, "Reason: %s\n", r.Reason)
	}
	fmt.Fprintf(w, "Gate: below %s%% failed, at least %d reporting, for %s\n",
		strconv.FormatFloat(r.Gate.MaxFailedPercent, 'f', -1, 64), r.Gate.MinReporting, r.Gate.Soak())
	rows := make([][]string, len(r.Waves))
	for i, wv := range r.Waves {
		pct, opened := "100%", "-"
		if wv.Percent > 0 && wv.Percent < 100 {
			pct = strconv.FormatFloat(wv.Percent, 'f', -1, 64) + "%"
		}
		if i < len(r.Opened) {
			opened = fmtTime(r.Opened[i])
		}
		rows[i] = []string{strconv.Itoa(i + 1), wv.DC, wv.After().String(), pct, opened}
	}
	return table(w, []string{"WAVE", "DC", "AFTER", "MACHINES", "OPENED"}, rows)
}
