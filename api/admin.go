package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

func (s *server) adminRoutes(v1 *mux.Router) {
	a := subrouter(v1, "/admin")
	a.Handle("/login", methods{http.MethodPost: s.handle(s.login)})
	a.Handle("/tiers", methods{http.MethodGet: s.asAdmin(s.listTiers), http.MethodPost: s.asAdmin(s.addTier)})
	a.Handle("/tiers/{name}", methods{http.MethodDelete: s.asAdmin(s.removeTier)})
	for _, k := range []struct {
		path string
		kind catalog.TokenKind
	}{{"/auth-tokens", catalog.TokenAuth}, {"/sync-tokens", catalog.TokenSync}} {
		a.Handle(k.path, methods{http.MethodGet: s.asAdmin(s.listTokens(k.kind)), http.MethodPost: s.asAdmin(s.addToken(k.kind))})
		a.Handle(k.path+"/{id}", methods{http.MethodDelete: s.asAdmin(s.revokeToken(k.kind))})
	}
	// Patch changes only on the hub; reading them anywhere.
	a.Handle("/patches", methods{http.MethodGet: s.asAdmin(s.listPatches), http.MethodPost: s.asAdmin(s.hubOnly(s.uploadPatch))})
	a.Handle("/patches/{digest}", methods{http.MethodGet: s.asAdmin(s.showPatch), http.MethodDelete: s.asAdmin(s.hubOnly(s.removePatch))})
	a.Handle("/patches/{ref}/promote", methods{http.MethodPost: s.asAdmin(s.hubOnly(s.promote))})
	a.Handle("/patches/{digest}/withdraw", methods{http.MethodPost: s.asAdmin(s.hubOnly(s.withdraw))})
	a.Handle("/promote-all", methods{http.MethodPost: s.asAdmin(s.hubOnly(s.promoteAll))})
	a.Handle("/machines", methods{http.MethodGet: s.asAdmin(s.listMachines)})
	a.Handle("/reports/machines", methods{http.MethodGet: s.asAdmin(s.reportMachines)})
	a.Handle("/reports/summary", methods{http.MethodGet: s.asAdmin(s.reportSummary)})
	a.Handle("/storage", methods{http.MethodGet: s.asAdmin(s.listStorage)})
	a.Handle("/storage/refresh", methods{http.MethodPost: s.asAdmin(s.refreshStorage)})
	s.syncAdminRoutes(a)
	s.nodeAdminRoutes(a)
	s.webhookRoutes(a)
	s.rolloutRoutes(a)
	s.revocationRoutes(a)
}

func (s *server) login(w http.ResponseWriter, r *http.Request) error {
	start := time.Now()
	user, password, ok := r.BasicAuth()
	var (
		mac     string
		expires time.Time
		err     error
	)
	if ok {
		mac, expires, err = s.auth.Login(r.Context(), user, password)
	} else {
		err = auth.ErrUnauthenticated
		s.securityEvent(r, auth.EventLoginFail, slog.String("reason", "no_basic_credentials"))
	}
	s.metrics.observeAuth(kindLogin, authOutcome(err), time.Since(start))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Macaroon string    `json:"macaroon"`
		Expires  time.Time `json:"expires"`
	}{mac, expires.UTC()})
	return nil
}

// Tiers.

func (s *server) listTiers(w http.ResponseWriter, r *http.Request, _ string) error {
	tiers, err := s.store.Tiers(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Tiers []catalog.Tier `json:"tiers"`
	}{nonNil(tiers)})
	return nil
}

func (s *server) addTier(w http.ResponseWriter, r *http.Request, _ string) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := catalog.ValidName("name", req.Name); err != nil {
		return err
	}
	t, err := s.store.AddTier(r.Context(), req.Name)
	if err != nil {
		return err
	}
	s.admitSelfOn(r, t.Name)
	writeJSON(w, http.StatusCreated, t)
	return nil
}

// admitSelfOn extends a hub's own live admission to a tier just added, as
// the hub admitted itself on every tier at its first start (node's
// admitSelf): else the new tier's roster would lack the hub, and its
// machines could not verify it. Only an admission under this hub's key is
// extended; a removed one is the operator's call and left alone. It is the
// node's own change, recorded in no audit entry (the tier's is the
// request's), and a failure is logged, not returned: the tier exists, and
// `admin nodes update` extends the admission as well.
func (s *server) admitSelfOn(r *http.Request, tier string) {
	if s.nodeKey == nil || s.info.Role != roleHub || s.info.Node == "" {
		return
	}
	ctx := store.WithoutActor(r.Context())
	nodes, err := s.store.Nodes(ctx)
	if err != nil {
		s.log.WarnContext(r.Context(), "hub_self_admission_failed", "tier", tier, "error", err.Error())
		return
	}
	i := slices.IndexFunc(nodes, func(n catalog.Node) bool {
		return n.Name == s.info.Node && n.Removed.IsZero() && n.KeyID == s.nodeKeyID
	})
	if i < 0 {
		return
	}
	self := nodes[i]
	self.Tiers, self.Admitted = []string{tier}, time.Time{}
	if _, err := s.store.AdmitNode(ctx, self); err != nil {
		if !errors.Is(err, catalog.ErrConflict) {
			s.log.WarnContext(r.Context(), "hub_self_admission_failed", "tier", tier, "error", err.Error())
		}
		return
	}
	s.securityEvent(r, auth.EventNodeAdmitted, slog.String("node", self.Name), slog.String("key_id", self.KeyID),
		slog.String("tiers", tier), slog.String("url", strings.Join(self.URLs, ",")), slog.String("by", "hub_tier_added"))
}

func (s *server) removeTier(w http.ResponseWriter, r *http.Request, _ string) error {
	name, err := pathVar(r, "name", func(n string) error { return catalog.ValidName("name", n) })
	if err != nil {
		return err
	}
	if err := s.store.RemoveTier(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// requireTier answers invalid_input when a tier a request names does not
// exist: the request is wrong, not a resource missing.
func (s *server) requireTier(r *http.Request, field, name string) error {
	tiers, err := s.store.Tiers(r.Context())
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(tiers, func(t catalog.Tier) bool { return t.Name == name }) {
		return invalid(field, "no tier named %q", name)
	}
	return nil
}

// Tokens.

func (s *server) listTokens(kind catalog.TokenKind) adminHandler {
	return func(w http.ResponseWriter, r *http.Request, _ string) error {
		q := newQuery(r)
		size := q.pageSize()
		f := store.TokenFilter{Kind: kind, Limit: size + 1, After: q.tokenAfter(kind)}
		if q.err != nil {
			return q.err
		}
		tokens, err := s.store.Tokens(r.Context(), f)
		if err != nil {
			return err
		}
		tokens, more := page(tokens, size)
		next := ""
		if more {
			last := tokens[len(tokens)-1]
			next = timeIDCursor("tokens-"+string(kind), last.Created, last.ID)
		}
		writePage(w, "tokens", tokens, next)
		return nil
	}
}

func (s *server) addToken(kind catalog.TokenKind) adminHandler {
	return func(w http.ResponseWriter, r *http.Request, user string) error {
		var req struct {
			Tier       string     `json:"tier"`
			Name       string     `json:"name"`
			ValidUntil *time.Time `json:"valid_until"`
		}
		if err := s.decode(w, r, &req); err != nil {
			return err
		}
		if err := validTier(req.Tier); err != nil {
			return err
		}
		if err := catalog.ValidName("name", req.Name); err != nil {
			return err
		}
		now := s.now()
		if req.ValidUntil != nil && !req.ValidUntil.After(now) {
			return invalid("valid_until", "must be in the future")
		}
		if err := s.requireTier(r, "tier", req.Tier); err != nil {
			return err
		}
		secret, t, err := auth.NewToken(kind)
		if err != nil {
			return err
		}
		t.Tier = req.Tier
		t.Name = req.Name
		t.Created = now.UTC().Truncate(time.Microsecond)
		if req.ValidUntil != nil {
			t.Expires = req.ValidUntil.UTC().Truncate(time.Microsecond)
		}
		if err := s.store.AddToken(r.Context(), t); err != nil {
			if errors.Is(err, catalog.ErrNotFound) { // the tier went away meanwhile
				return invalid("tier", "no tier named %q", req.Tier)
			}
			return err
		}
		s.securityEvent(r, auth.EventTokenCreated, slog.String("token_id", t.ID), slog.String("kind", string(kind)),
			slog.String("tier", t.Tier), slog.String("name", t.Name), slog.String("user", user))
		if stored, err := s.store.Token(r.Context(), t.ID); err == nil {
			t = stored // answer with the record as the store keeps it
		}
		writeJSON(w, http.StatusCreated, struct {
			Token string        `json:"token"`
			Info  catalog.Token `json:"info"`
		}{secret, t})
		return nil
	}
}

// revokeToken revokes a token of kind. An enrollment (auth) token's
// revocation with ?machines=true also revokes the machines registered
// with it, here and, through the hub's signed record, at every node of
// its tier; it answers with the machines revoked here.
func (s *server) revokeToken(kind catalog.TokenKind) adminHandler {
	return func(w http.ResponseWriter, r *http.Request, user string) error {
		id, err := pathVar(r, "id", validTokenID)
		if err != nil {
			return err
		}
		q := newQuery(r)
		machines := q.bool("machines")
		if q.err != nil {
			return q.err
		}
		if machines && kind != catalog.TokenAuth {
			return invalid("machines", "only an enrollment (auth) token's revocation can take its machines")
		}
		// A token of another kind is not found through this endpoint, so
		// that, say, a machine token cannot be revoked as a sync token.
		t, err := s.store.Token(r.Context(), id)
		if err != nil {
			return err
		}
		if t.Kind != kind {
			return notFound(fmt.Sprintf("no %s token %s", kind, id))
		}
		if !machines {
			if err := s.store.RevokeToken(r.Context(), kind, id, s.now()); err != nil {
				return err
			}
			s.securityEvent(r, auth.EventTokenRevoked, slog.String("token_id", id), slog.String("kind", string(kind)),
				slog.String("tier", t.Tier), slog.String("name", t.Name), slog.String("user", user))
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		ids, err := s.store.RevokeEnrollment(r.Context(), id, s.now(), true)
		if err != nil {
			return err
		}
		s.securityEvent(r, auth.EventTokenRevoked, slog.String("token_id", id), slog.String("kind", string(kind)),
			slog.String("tier", t.Tier), slog.String("name", t.Name), slog.String("user", user),
			slog.Bool("machines", true), slog.Int("machines_revoked", len(ids)))
		for _, m := range ids {
			s.securityEvent(r, auth.EventMachineRevoked, slog.String("machine_id", m), slog.String("tier", t.Tier),
				slog.String("user", user), slog.String("auth_token_id", id))
		}
		writeJSON(w, http.StatusOK, struct {
			Token           string   `json:"token"`
			MachinesRevoked []string `json:"machines_revoked"`
		}{id, nonNil(ids)})
		return nil
	}
}

// Patches.

// uploadPatch stores a patch file and its record. Everything the query
// says is checked before the body is read; the blob is committed (its
// digest verified while streaming) before the record, so a record never
// names a missing blob; and a failure after the commit removes a blob this
// request created, so nothing is left behind.
func (s *server) uploadPatch(w http.ResponseWriter, r *http.Request, _ string) error {
	ctx := r.Context()
	q := r.URL.Query()
	p := catalog.Patch{
		Digest:      q.Get("digest"),
		Kernel:      q.Get("kernel"),
		Arch:        q.Get("arch"),
		Version:     q.Get("version"),
		Description: q.Get("description"),
		CVEs:        []string{},
	}
	if c := q.Get("cves"); c != "" {
		p.CVEs = strings.Split(c, ",")
	}
	declared := int64(-1)
	if v := q.Get("size"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return invalid("size", "must be a positive number of bytes")
		}
		declared = n
	}
	switch {
	case declared > 0:
		p.Size = declared
	case r.ContentLength > 0:
		p.Size = r.ContentLength
	case r.ContentLength == 0:
		return invalid("size", "the patch file is empty")
	default:
		p.Size = 1 // unknown until read; checked again below
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Size > s.limits.MaxUploadBytes {
		return &http.MaxBytesError{Limit: s.limits.MaxUploadBytes}
	}
	if declared > 0 && r.ContentLength >= 0 && r.ContentLength != declared {
		return invalid("size", "is %d but the request body is %d bytes", declared, r.ContentLength)
	}
	// Answer a repeated upload, or refuse a duplicate digest, before
	// reading a possibly large body.
	if old, err := s.store.Patch(ctx, p.Digest); err == nil {
		return s.reupload(w, old, p, declared)
	} else if !errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	same, err := s.store.Patches(ctx, store.PatchFilter{Kernel: p.Kernel, Arch: p.Arch, Version: p.Version, IncludeWithdrawn: true, Limit: 1})
	if err != nil {
		return err
	}
	if len(same) > 0 {
		return fmt.Errorf("patch %s %s %s: %w", p.Kernel, p.Arch, p.Version, catalog.ErrConflict)
	}

	d := blob.Digest(p.Digest)
	// From here to the record, uploads and removals of one file take
	// turns, on every node sharing this store: otherwise a failing upload,
	// or a removal, could remove the blob a concurrent upload of the same
	// file has committed but not yet recorded.
	unlock, err := s.lockDigest(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	_, statErr := s.blobs.Stat(ctx, d)
	existed := statErr == nil
	if statErr != nil && !errors.Is(statErr, blob.ErrNotFound) {
		return statErr
	}
	body := http.MaxBytesReader(w, r.Body, s.limits.MaxUploadBytes)
	info, err := blob.Put(ctx, s.blobs, d, body)
	if err != nil {
		return err
	}
	if declared > 0 && info.Size != declared {
		s.dropBlob(r, d, existed)
		return invalid("size", "is %d but %d bytes were received", declared, info.Size)
	}
	p.Size = info.Size
	added, err := s.store.AddPatch(ctx, p)
	if err != nil {
		if errors.Is(err, catalog.ErrConflict) {
			// A concurrent upload of the same file may have recorded it
			// first: then this one is a repeat, and the blob is that
			// record's.
			if old, perr := s.store.Patch(ctx, p.Digest); perr == nil {
				return s.reupload(w, old, p, declared)
			}
		}
		s.dropBlob(r, d, existed)
		return err
	}
	writeJSON(w, http.StatusCreated, added)
	return nil
}

// reupload answers an upload whose digest the catalog holds already. The
// same file under the same kernel, arch and version is a repeat (a retried
// upload, a re-run script): it answers 200 with the record as it stands,
// which the upload changes in nothing. The same file under other metadata
// is a conflict: a digest names one patch.
func (s *server) reupload(w http.ResponseWriter, old, p catalog.Patch, declared int64) error {
	if old.Kernel != p.Kernel || old.Arch != p.Arch || old.Version != p.Version {
		return fmt.Errorf("patch %s is recorded already as kernel %s, arch %s, version %s: %w",
			p.Digest, old.Kernel, old.Arch, old.Version, catalog.ErrConflict)
	}
	if declared > 0 && declared != old.Size {
		return invalid("size", "is %d but the recorded patch with this digest has %d bytes", declared, old.Size)
	}
	writeJSON(w, http.StatusOK, old)
	return nil
}

// digestLocker is a store whose lock on a digest holds across every node
// sharing it (sqlstore on PostgreSQL: an advisory lock).
type digestLocker interface {
	LockDigest(ctx context.Context, digest string) (release func(), err error)
}

// lockDigest takes d's lock in this node, then, if the store shares it
// with other nodes, in the store, and returns the function that releases
// both. The node's own lock first keeps concurrent uploads of one file
// here from each holding a database connection while they wait.
func (s *server) lockDigest(ctx context.Context, d blob.Digest) (unlock func(), err error) {
	local := s.uploads.lock(d)
	dl, ok := s.store.(digestLocker)
	if !ok {
		return local, nil
	}
	shared, err := dl.LockDigest(ctx, string(d))
	if err != nil {
		local()
		return nil, err
	}
	return func() { shared(); local() }, nil
}

// digestLocks hands out one mutex per digest, created on first use and
// dropped when its last holder unlocks, so unrelated uploads never wait on
// each other.
type digestLocks struct {
	mu   sync.Mutex
	held map[blob.Digest]*digestLock
}

type digestLock struct {
	sync.Mutex
	refs int
}

// lock waits for d's mutex and returns the function that releases it.
func (l *digestLocks) lock(d blob.Digest) (unlock func()) {
	l.mu.Lock()
	if l.held == nil {
		l.held = make(map[blob.Digest]*digestLock)
	}
	dl := l.held[d]
	if dl == nil {
		dl = &digestLock{}
		l.held[d] = dl
	}
	dl.refs++
	l.mu.Unlock()
	dl.Lock()
	return func() {
		dl.Unlock()
		l.mu.Lock()
		if dl.refs--; dl.refs == 0 {
			delete(l.held, d)
		}
		l.mu.Unlock()
	}
}

// dropBlob removes a blob an upload committed but could not record, unless
// the blob was there before or a patch record now names it (a concurrent
// upload of the same file won the race): then the blob is that patch's.
func (s *server) dropBlob(r *http.Request, d blob.Digest, existed bool) {
	if existed {
		return
	}
	ctx := r.Context()
	if _, err := s.store.Patch(ctx, string(d)); !errors.Is(err, catalog.ErrNotFound) {
		return
	}
	if err := s.blobs.Remove(ctx, d); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log.LogAttrs(ctx, slog.LevelError, "could not remove the blob of a failed upload; storage refresh will list it as an orphan",
			slog.String("digest", string(d)), slog.String("error", err.Error()))
	}
}

func (s *server) listPatches(w http.ResponseWriter, r *http.Request, _ string) error {
	q := newQuery(r)
	size := q.pageSize()
	f := store.PatchFilter{
		Kernel:           q.get("kernel", catalog.ValidKernel),
		Arch:             q.get("arch", catalog.ValidArch),
		Tier:             q.get("tier", validTier),
		Version:          q.get("version", catalog.ValidVersion),
		DigestPrefix:     q.get("digest_prefix", validDigestPrefix),
		IncludeWithdrawn: q.bool("withdrawn"),
		Limit:            size + 1,
		After:            q.patchAfter(),
	}
	if q.err != nil {
		return q.err
	}
	patches, err := s.store.Patches(r.Context(), f)
	if err != nil {
		return err
	}
	patches, more := page(patches, size)
	next := ""
	if more {
		next = patchCursor(patches[len(patches)-1])
	}
	writePage(w, "patches", patches, next)
	return nil
}

// eachPatch calls fn for every patch f matches, a page at a time, so that
// no listing cap bounds what an operation sees.
func (s *server) eachPatch(ctx context.Context, f store.PatchFilter, fn func(catalog.Patch) error) error {
	f.Limit = defaultPage
	f.After = nil
	for {
		ps, err := s.store.Patches(ctx, f)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(ps) < f.Limit {
			return nil
		}
		f.After = store.PatchCursorOf(ps[len(ps)-1])
	}
}

func writePatches(w http.ResponseWriter, patches []catalog.Patch) {
	writeJSON(w, http.StatusOK, struct {
		Patches []catalog.Patch `json:"patches"`
	}{nonNil(patches)})
}

func (s *server) showPatch(w http.ResponseWriter, r *http.Request, _ string) error {
	digest, err := pathVar(r, "digest", catalog.ValidDigest)
	if err != nil {
		return err
	}
	p, err := s.store.Patch(r.Context(), digest)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// promote makes one patch (ref is a digest) or every live patch of a
// version (ref is a version) available on a tier.
func (s *server) promote(w http.ResponseWriter, r *http.Request, _ string) error {
	ref := mux.Vars(r)["ref"]
	byDigest := catalog.ValidDigest(ref) == nil
	if !byDigest && catalog.ValidVersion(ref) != nil {
		return invalid("ref", "must be a digest (sha256:…) or a version such as 107.1")
	}
	var req struct {
		Tier string `json:"tier"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := validTier(req.Tier); err != nil {
		return err
	}
	if err := s.requireTier(r, "tier", req.Tier); err != nil {
		return err
	}
	ctx := r.Context()
	if byDigest {
		p, err := s.store.Promote(ctx, ref, req.Tier)
		if err != nil {
			return err
		}
		writePatches(w, []catalog.Patch{p})
		return nil
	}
	var matches []catalog.Patch
	if err := s.eachPatch(ctx, store.PatchFilter{Version: ref}, func(p catalog.Patch) error {
		matches = append(matches, p)
		return nil
	}); err != nil {
		return err
	}
	if len(matches) == 0 {
		return notFound(fmt.Sprintf("no live patch has version %s", ref))
	}
	out := make([]catalog.Patch, 0, len(matches))
	for _, m := range matches {
		p, err := s.store.Promote(ctx, m.Digest, req.Tier)
		if err != nil {
			return err
		}
		out = append(out, p)
	}
	writePatches(w, out)
	return nil
}

func (s *server) promoteAll(w http.ResponseWriter, r *http.Request, _ string) error {
	var req struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := catalog.ValidName("from", req.From); err != nil {
		return err
	}
	if err := catalog.ValidName("to", req.To); err != nil {
		return err
	}
	if req.From == req.To {
		return invalid("to", "must differ from from")
	}
	if err := s.requireTier(r, "from", req.From); err != nil {
		return err
	}
	if err := s.requireTier(r, "to", req.To); err != nil {
		return err
	}
	n, err := s.store.PromoteAll(r.Context(), req.From, req.To)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Promoted int `json:"promoted"`
	}{n})
	return nil
}

func (s *server) withdraw(w http.ResponseWriter, r *http.Request, _ string) error {
	digest, err := pathVar(r, "digest", catalog.ValidDigest)
	if err != nil {
		return err
	}
	p, err := s.store.Withdraw(r.Context(), digest)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

// removePatch deletes the record, then the blob: in that order a record
// never names a missing blob, and a blob left by a failed removal shows up
// as an orphan in storage refresh.
func (s *server) removePatch(w http.ResponseWriter, r *http.Request, _ string) error {
	digest, err := pathVar(r, "digest", catalog.ValidDigest)
	if err != nil {
		return err
	}
	ctx := r.Context()
	unlock, err := s.lockDigest(ctx, blob.Digest(digest))
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.store.RemovePatch(ctx, digest); err != nil {
		return err
	}
	if err := s.blobs.Remove(ctx, blob.Digest(digest)); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log.LogAttrs(ctx, slog.LevelError, "patch record removed but its blob was not; storage refresh will list it as an orphan",
			slog.String("digest", digest), slog.String("error", err.Error()))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Machines and storage.

func (s *server) listMachines(w http.ResponseWriter, r *http.Request, _ string) error {
	q := newQuery(r)
	size := q.pageSize()
	f := store.MachineFilter{
		Tier:   q.get("tier", validTier),
		Kernel: q.get("kernel", catalog.ValidKernel),
		State:  catalog.MachineState(q.get("state", validStateString)),
		Limit:  size + 1,
		After:  q.machineAfter(),
	}
	if q.err != nil {
		return q.err
	}
	machines, err := s.store.Machines(r.Context(), f)
	if err != nil {
		return err
	}
	machines, more := page(machines, size)
	next := ""
	if more {
		last := machines[len(machines)-1]
		next = timeIDCursor("machines", last.LastSeen, last.ID)
	}
	writePage(w, "machines", machines, next)
	return nil
}

type blobEntry struct {
	Digest   string    `json:"digest"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

// errPageFull stops a blob enumeration once a page is full.
var errPageFull = errors.New("page full")

// listStorage pages through the blob store's digest-ordered enumeration;
// the cursor is the last digest of the page. The blob drivers enumerate
// from the start, so a page skips what came before it: the blob store
// holds one file per patch, far fewer than the machines and tokens that
// page by index.
func (s *server) listStorage(w http.ResponseWriter, r *http.Request, _ string) error {
	q := newQuery(r)
	size := q.pageSize()
	var after string
	if k := q.after("storage", 1); k != nil {
		if err := catalog.ValidDigest(k[0]); err != nil {
			return invalid("after", "is not a cursor of this listing")
		}
		after = k[0]
	}
	if q.err != nil {
		return q.err
	}
	blobs := []blobEntry{}
	more := false
	err := s.blobs.Enumerate(r.Context(), func(i blob.Info) error {
		if string(i.Digest) <= after {
			return nil
		}
		if len(blobs) == size {
			more = true
			return errPageFull
		}
		blobs = append(blobs, blobEntry{string(i.Digest), i.Size, i.Modified.UTC()})
		return nil
	})
	if err != nil && !errors.Is(err, errPageFull) {
		return err
	}
	next := ""
	if more {
		next = encodeCursor("storage", blobs[len(blobs)-1].Digest)
	}
	writePage(w, "blobs", blobs, next)
	return nil
}

// DefaultOrphanGrace is how old an orphan blob must be before a storage
// refresh with repair removes it: younger, it may be the blob of an upload
// or sync round whose record is about to be written.
const DefaultOrphanGrace = 24 * time.Hour

// refetcher is the sync loop of a relay or edge, which can fetch again the
// blobs its records name (federation.Puller).
type refetcher interface {
	Refetch(ctx context.Context, sizes map[blob.Digest]int64) error
}

// refreshStorage compares the stored blobs with the patch records and
// reports blobs no record names (orphans) and records whose blob is gone
// (missing). Without repair it changes nothing.
//
// With ?repair=true it also removes orphans older than ?grace= (default
// 24h; on a shared bucket a removal drops this node's claim, and the blob
// goes only when no node names it), claims every recorded blob on a shared
// bucket (restoring claims lost), and on a relay or edge fetches missing
// blobs again from the upstreams. The hub has no upstream: its missing
// blobs must be uploaded again.
func (s *server) refreshStorage(w http.ResponseWriter, r *http.Request, _ string) error {
	ctx := r.Context()
	q := newQuery(r)
	repair := q.bool("repair")
	if q.err != nil {
		return q.err
	}
	grace := DefaultOrphanGrace
	if v := r.URL.Query().Get("grace"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return invalid("grace", "must be a duration such as 24h or 30m, got %q", v)
		}
		grace = d
	}
	blobs := map[string]blob.Info{}
	if err := s.blobs.Enumerate(ctx, func(i blob.Info) error {
		blobs[string(i.Digest)] = i
		return nil
	}); err != nil {
		return err
	}
	recorded := map[string]bool{}
	missing := []string{}
	sizes := map[blob.Digest]int64{}
	if err := s.eachPatch(ctx, store.PatchFilter{IncludeWithdrawn: true}, func(p catalog.Patch) error {
		recorded[p.Digest] = true
		if _, ok := blobs[p.Digest]; !ok {
			missing = append(missing, p.Digest)
			sizes[blob.Digest(p.Digest)] = p.Size
		}
		return nil
	}); err != nil {
		return err
	}
	orphans := []string{}
	for d := range blobs {
		if recorded[d] {
			continue
		}
		// A patch recorded while the listing was read: ask about it.
		if _, err := s.store.Patch(ctx, d); errors.Is(err, catalog.ErrNotFound) {
			orphans = append(orphans, d)
		} else if err != nil {
			return err
		}
	}
	slices.Sort(orphans)
	slices.Sort(missing)
	removed, refetched := []string{}, []string{}
	if repair {
		removed = s.removeOrphans(ctx, orphans, blobs, grace)
		if c, ok := s.blobs.(blob.Claimer); ok {
			for d := range recorded {
				if _, ok := blobs[d]; ok {
					if err := c.Claim(ctx, blob.Digest(d)); err != nil {
						return err
					}
				}
			}
		}
		if rf, ok := s.sync.(refetcher); ok && len(missing) > 0 {
			if err := rf.Refetch(ctx, sizes); err != nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "storage repair could not fetch every missing blob",
					slog.String("error", err.Error()))
			}
			still := []string{}
			for _, d := range missing {
				if _, err := s.blobs.Stat(ctx, blob.Digest(d)); err == nil {
					refetched = append(refetched, d)
				} else {
					still = append(still, d)
				}
			}
			missing = still
		}
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "storage refresh", slog.Int("blobs", len(blobs)),
		slog.Int("patches", len(recorded)), slog.Int("orphans", len(orphans)), slog.Int("missing", len(missing)),
		slog.Bool("repair", repair), slog.Int("removed", len(removed)), slog.Int("refetched", len(refetched)))
	writeJSON(w, http.StatusOK, struct {
		Blobs     int      `json:"blobs"`
		Patches   int      `json:"patches"`
		Orphans   []string `json:"orphans"`
		Missing   []string `json:"missing"`
		Removed   []string `json:"removed"`
		Refetched []string `json:"refetched"`
	}{len(blobs), len(recorded), orphans, missing, removed, refetched})
	return nil
}

// removeOrphans removes the orphans older than grace, each after checking
// again that no record names it (one may have been written meanwhile).
func (s *server) removeOrphans(ctx context.Context, orphans []string, infos map[string]blob.Info, grace time.Duration) []string {
	removed := []string{}
	// Modification times come from the blob store's clock, which is real
	// time even when the api's clock is pinned (tests).
	cutoff := time.Now().Add(-grace)
	for _, d := range orphans {
		if !infos[d].Modified.Before(cutoff) {
			continue
		}
		unlock, err := s.lockDigest(ctx, blob.Digest(d))
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "storage repair could not lock an orphan blob",
				slog.String("digest", d), slog.String("error", err.Error()))
			continue
		}
		_, err = s.store.Patch(ctx, d)
		if errors.Is(err, catalog.ErrNotFound) {
			err = s.blobs.Remove(ctx, blob.Digest(d))
			if err == nil || errors.Is(err, blob.ErrNotFound) {
				removed = append(removed, d)
				err = nil
			}
		}
		unlock()
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "storage repair could not remove an orphan blob",
				slog.String("digest", d), slog.String("error", err.Error()))
		}
	}
	return removed
}

// nonNil makes an empty listing encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
