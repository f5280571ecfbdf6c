package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// Revocation: enrollment tokens with their machines, machines, sessions.

// authTokensRevoke revokes an enrollment token; with --machines the
// machines registered with it too, at this node at once and at every node
// of its tier once the hub's signed revocation reaches it.
func (a *admin) authTokensRevoke(ctx context.Context, args []string) error {
	fs := a.flags("auth-tokens revoke")
	machines := fs.Bool("machines", false, "revoke the machines registered with the token too (at every node of its tier, when revoked at the hub)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if !*machines {
		return deleteOne(ctx, a, "auth-tokens revoke", pos, "ID", "/v1/admin/auth-tokens", "revoked",
			func(id string) string { return "Revoked token " + id + "." })
	}
	api, pos, err := a.open("auth-tokens revoke", pos, "ID")
	if err != nil {
		return err
	}
	q := url.Values{"machines": {"true"}}
	raw, err := api.call(ctx, http.MethodDelete, "/v1/admin/auth-tokens/"+pathEscape(pos[0]), q, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct {
			MachinesRevoked []string `json:"machines_revoked"`
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Revoked token %s and the %d machine(s) registered with it here.\n", pos[0], len(out.MachinesRevoked))
		return err
	})
}

func (a *admin) machinesRevoke(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "machines revoke", args, "ID")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/machines/"+pathEscape(pos[0])+"/revoke", nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct {
			ID      string           `json:"id"`
			Scope   string           `json:"scope"`
			Revoked time.Time        `json:"revoked"`
			Tiers   []string         `json:"tiers"`
			Machine *catalog.Machine `json:"machine"`
			Note    string           `json:"note"`
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		where := "never registered here"
		if out.Machine != nil {
			where = "tier " + out.Machine.Tier
		}
		_, err := fmt.Fprintf(a.stdout, "Revoked machine %s (%s) at %s, scope %s: %s.\n",
			out.ID, where, fmtTime(out.Revoked), out.Scope, out.Note)
		return err
	})
}

func (a *admin) machinesDelete(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "machines delete", args, "ID")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodDelete, "/v1/admin/machines/"+pathEscape(pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct {
			ID    string `json:"id"`
			Scope string `json:"scope"`
			Note  string `json:"note"`
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Deleted machine %s and its tokens, scope %s: %s.\n", out.ID, out.Scope, out.Note)
		return err
	})
}

func (a *admin) sessionsRevoke(ctx context.Context, args []string) error {
	return deleteOne(ctx, a, "sessions revoke", args, "USER", "/v1/admin/sessions", "revoked", func(user string) string {
		return "Ended every session of " + user + " on this node and the nodes sharing its database; " + user + " logs in again to get a new one."
	})
}
