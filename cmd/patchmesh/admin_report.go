package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Fleet reports: the machines and totals of the subtree of the node asked.

// reportPage is how many machines one request of `report machines` asks
// for; the command follows the pages to the end. A variable so that tests
// can make pages small.
var reportPage = 5000

// maxReportPages bounds the pages one listing follows (50 million
// machines), so that a server that keeps answering a next page cannot
// hold the command forever.
const maxReportPages = 10000

// reportFilters adds the filters both report commands take.
func reportFilters(fs *flag.FlagSet) func() url.Values {
	tier := fs.String("tier", "", "only machines on this tier")
	dc := fs.String("dc", "", "only machines of nodes in this data centre")
	kernel := fs.String("kernel", "", "only machines running this kernel release")
	state := fs.String("state", "", "only machines that last reported this state")
	version := fs.String("version", "", "only machines whose last report concerns this patch version")
	return func() url.Values {
		q := url.Values{}
		setNonEmpty(q, "tier", *tier)
		setNonEmpty(q, "dc", *dc)
		setNonEmpty(q, "kernel", *kernel)
		setNonEmpty(q, "state", *state)
		setNonEmpty(q, "version", *version)
		return q
	}
}

type reportMachine struct {
	ID           string    `json:"id"`
	Tier         string    `json:"tier"`
	Node         string    `json:"node"`
	DC           string    `json:"dc"`
	Kernel       string    `json:"kernel"`
	Arch         string    `json:"arch"`
	State        string    `json:"state"`
	PatchVersion string    `json:"patch_version"`
	LastSeen     time.Time `json:"last_seen"`
}

func (m reportMachine) row() []string {
	return []string{m.ID, m.Tier, m.Node, m.DC, m.Kernel, m.Arch, m.State, m.PatchVersion, m.LastSeen.UTC().Format(time.RFC3339)}
}

var reportMachineHeader = []string{"MACHINE", "TIER", "NODE", "DC", "KERNEL", "ARCH", "STATE", "PATCH", "LAST SEEN"}

func (a *admin) reportMachines(ctx context.Context, args []string) error {
	fs := a.flags("report machines")
	query := reportFilters(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("report machines", pos)
	if err != nil {
		return err
	}
	q := query()
	q.Set("limit", strconv.Itoa(reportPage))
	var (
		node string
		all  []reportMachine
		cw   *csv.Writer
	)
	if a.output == "csv" {
		cw = csv.NewWriter(a.stdout)
		cw.Write([]string{"id", "tier", "node", "dc", "kernel", "arch", "state", "patch_version", "last_seen"})
	}
	for page := 0; ; page++ {
		if page == maxReportPages {
			return fmt.Errorf("report machines: more than %d pages; narrow the listing with filters", maxReportPages)
		}
		raw, err := api.call(ctx, http.MethodGet, "/v1/admin/reports/machines", q, nil)
		if err != nil {
			return err
		}
		var out struct {
			Node     string          `json:"node"`
			Machines []reportMachine `json:"machines"`
			Next     string          `json:"next"`
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		node = out.Node
		if cw != nil {
			for _, m := range out.Machines {
				cw.Write(m.row())
			}
			cw.Flush()
			if err := cw.Error(); err != nil {
				return err
			}
		} else {
			all = append(all, out.Machines...)
		}
		if out.Next == "" || len(out.Machines) == 0 {
			break
		}
		q.Set("after", out.Next)
	}
	if cw != nil {
		return nil
	}
	if all == nil {
		all = []reportMachine{}
	}
	return a.show(nil, struct {
		Node     string          `json:"node"`
		Machines []reportMachine `json:"machines"`
	}{node, all}, func() error {
		rows := make([][]string, len(all))
		for i, m := range all {
			r := m.row()
			r[0] = r[0][:min(16, len(r[0]))]
			r[7] = orDash(r[7])
			rows[i] = r
		}
		return table(a.stdout, reportMachineHeader, rows)
	})
}

func (a *admin) reportSummary(ctx context.Context, args []string) error {
	fs := a.flags("report summary")
	query := reportFilters(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("report summary", pos)
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/admin/reports/summary", query(), nil)
	if err != nil {
		return err
	}
	var out struct {
		Node     string    `json:"node"`
		AsOf     time.Time `json:"as_of"`
		Machines int64     `json:"machines"`
		Totals   []struct {
			Tier         string `json:"tier"`
			DC           string `json:"dc"`
			Kernel       string `json:"kernel"`
			PatchVersion string `json:"patch_version"`
			State        string `json:"state"`
			Machines     int64  `json:"machines"`
		} `json:"totals"`
		Nodes []struct {
			Node string    `json:"node"`
			DC   string    `json:"dc"`
			AsOf time.Time `json:"as_of"`
		} `json:"nodes"`
	}
	if err := decode(raw, &out); err != nil {
		return err
	}
	if a.output == "csv" {
		cw := csv.NewWriter(a.stdout)
		cw.Write([]string{"tier", "dc", "kernel", "patch_version", "state", "machines"})
		for _, t := range out.Totals {
			cw.Write([]string{t.Tier, t.DC, t.Kernel, t.PatchVersion, t.State, strconv.FormatInt(t.Machines, 10)})
		}
		cw.Flush()
		return cw.Error()
	}
	return a.show(raw, nil, func() error {
		rows := make([][]string, len(out.Totals))
		for i, t := range out.Totals {
			rows[i] = []string{t.Tier, t.DC, t.Kernel, orDash(t.PatchVersion), t.State, strconv.FormatInt(t.Machines, 10)}
		}
		if err := table(a.stdout, []string{"TIER", "DC", "KERNEL", "PATCH", "STATE", "MACHINES"}, rows); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "\n%d machines in the subtree of %s. Figures as of:\n", out.Machines, out.Node)
		nrows := make([][]string, len(out.Nodes))
		for i, n := range out.Nodes {
			nrows[i] = []string{n.Node, n.DC, fmtTime(n.AsOf)}
		}
		return table(a.stdout, []string{"NODE", "DC", "AS OF"}, nrows)
	})
}
