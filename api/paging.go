package api

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Listings answer a page at a time: at most `limit` items (default
// defaultPage), and "next", an opaque cursor, when more follow; the client
// asks again with `after=<next>`. The cursor holds the sort key of the
// page's last item, so the store resumes by index (keyset) and a page
// costs the same anywhere in a listing. Items changed between pages may be
// seen twice or not at all; nothing else is.

// defaultPage is a page's size when the request gives no limit.
const defaultPage = 1000

// maxCursor bounds the after parameter, before it is decoded.
const maxCursor = 2048

// pageCursor is what a cursor holds: the listing it belongs to and the
// last item's sort key.
type pageCursor struct {
	List string   `json:"l"`
	Key  []string `json:"k"`
}

func encodeCursor(list string, key ...string) string {
	b, _ := json.Marshal(pageCursor{list, key}) // strings only: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// after reads the after parameter of a listing: nil when absent, else the
// key of n strings it holds. A cursor of another listing, or not a cursor
// at all, is invalid input.
func (q *query) after(list string, n int) []string {
	v := q.v.Get("after")
	if q.err != nil || v == "" {
		return nil
	}
	bad := func() []string {
		q.err = invalid("after", "is not a cursor of this listing: pass the \"next\" of the previous page as it came")
		return nil
	}
	if len(v) > maxCursor {
		return bad()
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return bad()
	}
	var c pageCursor
	if err := json.Unmarshal(b, &c); err != nil || c.List != list || len(c.Key) != n {
		return bad()
	}
	return c.Key
}

// pageSize is the limit parameter, or defaultPage.
func (q *query) pageSize() int {
	if n := q.limit(); n > 0 {
		return n
	}
	return defaultPage
}

// page cuts a store answer fetched with size+1 to size items, and says
// whether more follow.
func page[T any](items []T, size int) ([]T, bool) {
	if len(items) > size {
		return items[:size], true
	}
	return items, false
}

// writePage answers one page of a listing under key, with "next" when more
// follow.
func writePage[T any](w http.ResponseWriter, key string, items []T, next string) {
	body := map[string]any{key: nonNil(items)}
	if next != "" {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
}

// Patches.

func patchCursor(p catalog.Patch) string {
	return encodeCursor("patches", p.Version, p.Kernel, p.Arch, p.Digest)
}

func (q *query) patchAfter() *store.PatchCursor {
	k := q.after("patches", 4)
	if k == nil {
		return nil
	}
	for _, check := range []error{catalog.ValidVersion(k[0]), catalog.ValidKernel(k[1]), catalog.ValidArch(k[2]), catalog.ValidDigest(k[3])} {
		if check != nil {
			q.err = invalid("after", "is not a cursor of this listing")
			return nil
		}
	}
	return &store.PatchCursor{Version: k[0], Kernel: k[1], Arch: k[2], Digest: k[3]}
}

// Machines and tokens: a time (microseconds) and an ID.

func timeIDCursor(list string, t time.Time, id string) string {
	return encodeCursor(list, strconv.FormatInt(t.UnixMicro(), 10), id)
}

func (q *query) timeIDAfter(list string) (time.Time, string, bool) {
	k := q.after(list, 2)
	if k == nil {
		return time.Time{}, "", false
	}
	us, err := strconv.ParseInt(k[0], 10, 64)
	if err != nil || k[1] == "" || len(k[1]) > 128 {
		q.err = invalid("after", "is not a cursor of this listing")
		return time.Time{}, "", false
	}
	return time.UnixMicro(us).UTC(), k[1], true
}

func (q *query) machineAfter() *store.MachineCursor {
	t, id, ok := q.timeIDAfter("machines")
	if !ok {
		return nil
	}
	return &store.MachineCursor{LastSeen: t, ID: id}
}

func (q *query) tokenAfter(kind catalog.TokenKind) *store.TokenCursor {
	t, id, ok := q.timeIDAfter("tokens-" + string(kind))
	if !ok {
		return nil
	}
	return &store.TokenCursor{Created: t, ID: id}
}

// validDigestPrefix checks a digest prefix: "sha256:" and 1 to 64
// lowercase hex digits.
func validDigestPrefix(p string) error {
	hexPart, ok := strings.CutPrefix(p, "sha256:")
	if !ok || hexPart == "" || len(hexPart) > 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return invalid("digest_prefix", "must be sha256: and 1 to 64 lowercase hex digits")
	}
	return nil
}
