package main

// Contexts: the logins the admin tool keeps, one per node (or per user of
// a node), under names the operator picks.

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// contextInfo is a kept login as `context list` shows it: never the
// macaroon.
type contextInfo struct {
	Name    string    `json:"name"`
	Server  string    `json:"server"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
	Current bool      `json:"current"`
}

// configOnly parses a command that works on the config file alone.
func (a *admin) configOnly(cmd string, args []string, names ...string) (dir string, cfg adminConfig, pos []string, err error) {
	fs := a.flags(cmd)
	if pos, err = parseArgs(fs, args); err != nil {
		return "", cfg, nil, err
	}
	if err = wantArgs("patchmesh admin "+cmd, pos, names...); err != nil {
		return "", cfg, nil, err
	}
	if dir, err = adminConfigDir(a.getenv); err != nil {
		return "", cfg, nil, err
	}
	cfg, err = loadConfig(dir)
	return dir, cfg, pos, err
}

func (a *admin) contextList(ctx context.Context, args []string) error {
	_, cfg, _, err := a.configOnly("context list", args)
	if err != nil {
		return err
	}
	list := make([]contextInfo, 0, len(cfg.Contexts))
	for name, l := range cfg.Contexts {
		list = append(list, contextInfo{Name: name, Server: l.Server, User: l.User, Expires: l.Expires, Current: name == cfg.Current})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	out := struct {
		Current  string        `json:"current"`
		Contexts []contextInfo `json:"contexts"`
	}{cfg.Current, list}
	return a.show(nil, out, func() error {
		if len(list) == 0 {
			_, err := fmt.Fprintln(a.stdout, "No logins kept; run patchmesh admin login --server URL.")
			return err
		}
		now := a.now()
		rows := make([][]string, len(list))
		for i, c := range list {
			mark, state := "", "live"
			if c.Current {
				mark = "*"
			}
			if !c.Expires.IsZero() && !now.Before(c.Expires) {
				state = "expired"
			}
			rows[i] = []string{mark, c.Name, c.Server, c.User, fmtTime(c.Expires), state}
		}
		return table(a.stdout, []string{"CURRENT", "NAME", "SERVER", "USER", "EXPIRES", "STATE"}, rows)
	})
}

func (a *admin) contextUse(ctx context.Context, args []string) error {
	dir, cfg, pos, err := a.configOnly("context use", args, "NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	if _, ok := cfg.Contexts[name]; !ok { // checked again under the lock
		return fmt.Errorf("%w %q: see patchmesh admin context list", errNoContext, name)
	}
	var l adminLogin
	if err := updateConfig(dir, func(cfg *adminConfig) error {
		var ok bool
		if l, ok = cfg.Contexts[name]; !ok {
			return fmt.Errorf("%w %q: see patchmesh admin context list", errNoContext, name)
		}
		cfg.Current = name
		return nil
	}); err != nil {
		return err
	}
	return a.show(nil, map[string]string{"current": name, "server": l.Server}, func() error {
		_, err := fmt.Fprintf(a.stdout, "Current context is now %s (%s).\n", name, l.Server)
		return err
	})
}

func (a *admin) contextRemove(ctx context.Context, args []string) error {
	dir, cfg, pos, err := a.configOnly("context remove", args, "NAME")
	if err != nil {
		return err
	}
	name := pos[0]
	if _, ok := cfg.Contexts[name]; !ok { // checked again under the lock
		return fmt.Errorf("%w %q: see patchmesh admin context list", errNoContext, name)
	}
	if err := updateConfig(dir, func(cfg *adminConfig) error {
		if _, ok := cfg.Contexts[name]; !ok {
			return fmt.Errorf("%w %q: see patchmesh admin context list", errNoContext, name)
		}
		cfg.forget(name)
		return nil
	}); err != nil {
		return err
	}
	return a.show(nil, map[string]string{"removed": name}, func() error {
		_, err := fmt.Fprintf(a.stdout, "Removed context %s and its login.\n", name)
		return err
	})
}
