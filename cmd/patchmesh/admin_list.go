package main

// Listings and digests: the admin tool follows a listing's pages (the
// node answers a page and a cursor to the next), and resolves a digest
// prefix to the one patch it names.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
)

// listPage is the page size the tool asks for; a variable so that tests
// page through a few items.
var listPage = 1000

// maxPages bounds one listing: with listPage items a page, ten million
// items, far beyond any node.
const maxPages = 10_000

// listing is what a paged listing returned: the items, raw as the node
// sent them, and the cursor of the next page when --limit stopped it early.
type listing struct {
	key   string
	items []json.RawMessage
	next  string
}

// listFlags adds --limit and --after to a listing command's flags.
func listFlags(fs *flag.FlagSet) (limit *int, after *string) {
	limit = fs.Int("limit", 0, "list at most `N` items (0: every page)")
	after = fs.String("after", "", "start after this `cursor` (the \"next\" of an earlier --limit listing)")
	return limit, after
}

// list fetches a listing page by page: every page, or until limit items
// (limit > 0). key is the field holding the items ("patches").
func (api *adminAPI) list(ctx context.Context, path string, q url.Values, key string, limit int, after string) (listing, error) {
	if limit < 0 {
		return listing{}, usagef("--limit must be 0 (everything) or more")
	}
	out := listing{key: key, items: []json.RawMessage{}}
	for range maxPages {
		page := listPage
		if limit > 0 && limit-len(out.items) < page {
			page = limit - len(out.items)
		}
		pq := url.Values{}
		for k, v := range q {
			pq[k] = v
		}
		pq.Set("limit", strconv.Itoa(page))
		if after != "" {
			pq.Set("after", after)
		}
		raw, err := api.call(ctx, http.MethodGet, path, pq, nil)
		if err != nil {
			return listing{}, err
		}
		var body map[string]json.RawMessage
		if err := decode(raw, &body); err != nil {
			return listing{}, err
		}
		var items []json.RawMessage
		if err := decode(body[key], &items); err != nil {
			return listing{}, err
		}
		var next string
		if n, ok := body["next"]; ok {
			if err := decode(n, &next); err != nil {
				return listing{}, err
			}
		}
		out.items = append(out.items, items...)
		if next == "" {
			return out, nil
		}
		if next == after || len(items) == 0 {
			return listing{}, fmt.Errorf("%s: the node's next page does not move on; docs/api.md promises it does", path)
		}
		after = next
		if limit > 0 && len(out.items) >= limit {
			out.next = next
			return out, nil
		}
	}
	return listing{}, fmt.Errorf("%s: more than %d pages", path, maxPages)
}

// decodeItems decodes the items for text output.
func (l listing) decodeItems(v any) error {
	b, err := json.Marshal(l.items)
	if err != nil {
		return err
	}
	return decode(b, v)
}

// show prints the listing: in JSON as one answer of the node's shape
// ({"patches": [...]}, with "next" when --limit stopped it early), else
// through text.
func (a *admin) showListing(l listing, text func() error) error {
	if a.output == "json" {
		body := map[string]any{l.key: l.items}
		if l.next != "" {
			body["next"] = l.next
		}
		return printJSON(a.stdout, nil, body)
	}
	if err := text(); err != nil {
		return err
	}
	if l.next != "" {
		_, err := fmt.Fprintf(a.stderr, "More follow: add --after %s\n", l.next)
		return err
	}
	return nil
}

// minPrefix is the fewest hex digits a digest prefix may have.
const minPrefix = 8

// resolveDigest turns what an operator typed for a patch into its full
// digest: a full digest as it is, else a prefix of at least minPrefix hex
// digits, with or without "sha256:", that exactly one patch's digest
// (withdrawn or not) starts with.
func (api *adminAPI) resolveDigest(ctx context.Context, ref string) (string, error) {
	if catalog.ValidDigest(ref) == nil {
		return ref, nil
	}
	hexPart := strings.TrimPrefix(ref, "sha256:")
	if len(hexPart) < minPrefix || len(hexPart) > 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return "", usagef("%q is not a digest: want sha256: and 64 lowercase hex digits, or a unique prefix of at least %d of them", ref, minPrefix)
	}
	// Two matches are enough to know it is ambiguous; a few more say how
	// ambiguous.
	const probe = 100
	q := url.Values{"digest_prefix": {"sha256:" + hexPart}, "withdrawn": {"true"}}
	l, err := api.list(ctx, "/v1/admin/patches", q, "patches", probe, "")
	if err != nil {
		return "", err
	}
	var ps []catalog.Patch
	if err := l.decodeItems(&ps); err != nil {
		return "", err
	}
	switch {
	case len(ps) == 1:
		return ps[0].Digest, nil
	case len(ps) == 0:
		return "", fmt.Errorf("%w: no patch's digest starts with sha256:%s", errNoMatch, hexPart)
	case l.next != "":
		return "", usagef("sha256:%s is ambiguous: more than %d patches' digests start with it; give more digits", hexPart, len(ps))
	}
	return "", usagef("sha256:%s is ambiguous: %d patches' digests start with it; give more digits", hexPart, len(ps))
}

// showAll is the whole of a command that lists one unpaged collection: it
// asks GET path, prints the answer as JSON with --output json, and else
// decodes the items under key and prints them as a table, one row each.
func showAll[T any](ctx context.Context, a *admin, name string, args []string, path, key string, header []string, row func(T) []string) error {
	api, _, err := a.prepare(ctx, name, args)
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out map[string]json.RawMessage
		if err := decode(raw, &out); err != nil {
			return err
		}
		var items []T
		if err := decode(out[key], &items); err != nil {
			return err
		}
		rows := make([][]string, len(items))
		for i, it := range items {
			rows[i] = row(it)
		}
		return table(a.stdout, header, rows)
	})
}

// deleteOne is the whole of a command that deletes one thing by the single
// argument it takes (named arg in usage): DELETE collection/ARG, then
// {verb: ARG} with --output json, else the text done(ARG) returns.
func deleteOne(ctx context.Context, a *admin, name string, args []string, arg, collection, verb string, done func(string) string) error {
	api, pos, err := a.prepare(ctx, name, args, arg)
	if err != nil {
		return err
	}
	if _, err := api.call(ctx, http.MethodDelete, collection+"/"+pathEscape(pos[0]), nil, nil); err != nil {
		return err
	}
	return a.show(nil, map[string]string{verb: pos[0]}, func() error {
		_, err := fmt.Fprintln(a.stdout, done(pos[0]))
		return err
	})
}
