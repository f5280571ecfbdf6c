package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// PatchDir is the state directory's folder of verified patch files, each
// named by the hex of its SHA-256.
const PatchDir = "patches"

// RefreshOptions says what a machine is and how it applies a patch.
type RefreshOptions struct {
	// Kernel and Arch are the running kernel release and architecture.
	Kernel, Arch string
	// ApplyHook is a shell command run (with /bin/sh -c) after a patch is
	// verified, with PATCHMESH_PATCH_FILE, PATCHMESH_PATCH_VERSION and
	// PATCHMESH_PATCH_DIGEST in its environment. Exit 0 reports applied,
	// anything else apply-failed. Empty: no hook, the patch is reported
	// unapplied. The hook runs on every refresh that finds a patch, so it
	// must be idempotent.
	ApplyHook string
}

// RefreshResult is what a refresh did.
type RefreshResult struct {
	// State is what the machine reported.
	State catalog.MachineState
	// Patch is the patch offered, as the hub signed it; nil when there was
	// none or the offer was refused.
	Patch *catalog.Patch
	// Refused says why an offer was refused (ErrOfferRefused); empty
	// otherwise.
	Refused string
	// Path is the verified patch file; empty when there was none or it was
	// refused.
	Path string
	// Downloaded is false when a verified copy was already there.
	Downloaded bool
	// Machine is the server's record after the check-in.
	Machine catalog.Machine
	// Stale says why no node gave a fresh answer (ErrStale); empty when
	// one did.
	Stale string
}

// Refresh asks for the newest patch for the machine's kernel and arch,
// verifies the offer against the pinned hub keys (VerifyOffer), downloads
// the patch and checks it against the signed digest and size (or reuses a
// verified copy), runs the apply hook and checks in with the outcome.
//
// Each of the three calls goes to the nearest node that answers, so they
// may reach different nodes when one fails mid-way; the bytes are checked
// against the hub-signed record the first call got. The first call also
// passes over nodes whose hub heartbeat is stale (checkFresh); when none
// is fresh, the refresh does its work with the last answer and returns an
// error wrapping ErrStale besides (RefreshResult.Stale says why).
//
// A refused offer downloads nothing and runs no hook: it checks in
// check-failed and returns an error wrapping ErrOfferRefused. A digest
// mismatch deletes the downloaded bytes, checks in check-failed and returns
// an error wrapping ErrDigestMismatch; a failed hook checks in apply-failed
// and returns an error wrapping ErrApplyFailed. In these cases the result
// is filled in too. A machine without pins (ErrNoPins) and other errors
// (network, server) return without a check-in.
func (c *Client) Refresh(ctx context.Context, o RefreshOptions) (RefreshResult, error) {
	if err := catalog.ValidKernel(o.Kernel); err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	if err := catalog.ValidArch(o.Arch); err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	s, err := c.open(ctx, o.Kernel, o.Arch, false)
	if err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	pins, err := s.st.Pins()
	if err == nil && s.st.HubTier == "" {
		err = ErrNoPins
	}
	if err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	check := OfferCheck{HubTier: s.st.HubTier, Kernel: o.Kernel, Arch: o.Arch, Withdrawn: s.st.Withdrawn}
	q := url.Values{"kernel": {o.Kernel}, "arch": {o.Arch}}
	if a, ok := s.st.Applied[appliedKey(o.Kernel, o.Arch)]; ok {
		check.Applied = &a
		// The node then hands over the hub's withdrawal of it, if any.
		q.Set("applied", a.Digest)
	}

	offer, stale, err := c.askPatch(ctx, s, pins, q)
	if err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	if offer == nil {
		res := RefreshResult{State: catalog.StateNothingToApply, Stale: stale}
		m, err := c.checkin(ctx, s, o, res.State, "")
		if err != nil {
			return res, errors.Join(staleErr(stale), fmt.Errorf("refresh: %w", err))
		}
		res.Machine = m
		return res, staleErr(stale)
	}
	res, err := c.take(ctx, s, pins, o, check, *offer)
	res.Stale = stale
	return res, errors.Join(staleErr(stale), err)
}

// staleErr is the error a refresh that found no fresh node returns,
// besides the outcome of what it was offered.
func staleErr(reason string) error {
	if reason == "" {
		return nil
	}
	return fmt.Errorf("refresh: %w: %s", ErrStale, reason)
}

// askPatch asks the nodes in order for the newest patch, checking the hub
// heartbeat each answer carries (checkFresh): a stale node passes the
// question to the next one. It returns the offer, nil for "nothing to
// offer", and why the answer is stale when no node gave a fresh one, in
// which case the answer is the last stale node's: what the hub signed is
// still worth verifying and applying, the machine just cannot know that
// nothing newer exists.
func (c *Client) askPatch(ctx context.Context, s *session, pins *Pins, q url.Values) (*federation.Offer, string, error) {
	type answer struct {
		offer *federation.Offer
		why   error
	}
	var last *answer
	err := s.do(ctx, func(ctx context.Context, t target) error {
		var offer federation.Offer
		h, err := c.apiCallHeader(ctx, t.url, t.token, http.MethodGet, "/v1/client/patch", q, nil, &offer)
		var apiErr *APIError
		none := errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound
		if err != nil && !none {
			return err
		}
		a := &answer{offer: &offer}
		if none {
			a.offer = nil
		}
		env, herr := heartbeatOf(offer, h)
		if herr != nil {
			herr = &staleNode{fmt.Errorf("%s: %w", t.url, herr)}
		} else {
			herr = s.checkFresh(pins, t.url, env, time.Now())
		}
		var sn *staleNode
		if errors.As(herr, &sn) {
			a.why = herr
			last = a
			return herr
		}
		if herr != nil {
			return herr
		}
		last = a
		return nil
	})
	switch {
	case err == nil:
		return last.offer, "", s.markStale("")
	case last != nil && last.why != nil && ctx.Err() == nil && failsOver(err):
		reason := last.why.Error()
		if merr := s.markStale(reason); merr != nil {
			return nil, "", merr
		}
		return last.offer, reason, nil
	}
	return nil, "", err
}

// take verifies an offer, downloads, applies and checks in.
func (c *Client) take(ctx context.Context, s *session, pins *Pins, o RefreshOptions, check OfferCheck, offer federation.Offer) (RefreshResult, error) {
	known := len(pins.Keys())
	rec, verr := VerifyOffer(pins, offer, check)
	if len(pins.Keys()) > known {
		// A pinned key endorsed a new one: keep it, so that the machine
		// follows the hub's rotation even when no node hands over the
		// endorsement any more.
		s.st.HubKeys = pins.Keys()
		if err := s.save(); err != nil {
			return RefreshResult{}, fmt.Errorf("refresh: %w", err)
		}
	}
	if verr != nil {
		res := RefreshResult{State: catalog.StateCheckFailed, Refused: verr.Error()}
		m, cerr := c.checkin(ctx, s, o, res.State, "")
		res.Machine = m
		return res, errors.Join(fmt.Errorf("refresh: %w", verr), cerr)
	}
	p := rec.Patch
	res := RefreshResult{Patch: &p}

	path, downloaded, err := c.fetch(ctx, s, p)
	if errors.Is(err, ErrDigestMismatch) {
		res.State = catalog.StateCheckFailed
		m, cerr := c.checkin(ctx, s, o, res.State, p.Version)
		res.Machine = m
		return res, errors.Join(fmt.Errorf("refresh: %w", err), cerr)
	}
	if err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	res.Path, res.Downloaded = path, downloaded

	var hookErr error
	switch {
	case o.ApplyHook == "":
		res.State = catalog.StateUnapplied
	default:
		hookErr = c.runHook(ctx, o.ApplyHook, path, p)
		res.State = catalog.StateApplied
		if hookErr != nil {
			res.State = catalog.StateApplyFailed
		}
	}
	if res.State == catalog.StateApplied {
		if err := s.applied(pins, rec, offer.Withdrawal); err != nil {
			return res, fmt.Errorf("refresh: applied, but %w", err)
		}
	}
	m, cerr := c.checkin(ctx, s, o, res.State, p.Version)
	res.Machine = m
	if hookErr != nil {
		return res, errors.Join(fmt.Errorf("refresh: %w", hookErr), cerr)
	}
	if cerr != nil {
		return res, fmt.Errorf("refresh: %w", cerr)
	}
	return res, nil
}

// applied records that the patch of rec is applied, before the check-in
// says so, so that no later offer can roll the machine back from it, and
// the hub's withdrawal that came with it, if one did, so that the patch
// it withdrew is not taken back either.
func (s *session) applied(pins *Pins, rec federation.Record, withdrawal *federation.Envelope) error {
	if s.st.Applied == nil {
		s.st.Applied = map[string]Applied{}
	}
	if withdrawal != nil {
		w, err := pins.Open(*withdrawal)
		if err == nil && w.Tier == s.st.HubTier &&
			(w.Type == catalog.EventPatchWithdrawn || w.Type == catalog.EventPatchRemoved) {
			if s.st.Withdrawn == nil {
				s.st.Withdrawn = map[string]int64{}
			}
			s.st.Withdrawn[w.Patch.Digest] = max(s.st.Withdrawn[w.Patch.Digest], w.TierSeq)
		}
	}
	p := rec.Patch
	s.st.Applied[appliedKey(p.Kernel, p.Arch)] = Applied{
		Kernel: p.Kernel, Arch: p.Arch, Version: p.Version, Digest: p.Digest,
		TierSeq: rec.TierSeq, At: time.Now().UTC(),
	}
	if err := s.save(); err != nil {
		return fmt.Errorf("recording it failed: %w", err)
	}
	return nil
}

// checkin reports the machine's state.
func (c *Client) checkin(ctx context.Context, s *session, o RefreshOptions, state catalog.MachineState, version string) (catalog.Machine, error) {
	in := struct {
		State         catalog.MachineState `json:"state"`
		Kernel        string               `json:"kernel"`
		Arch          string               `json:"arch"`
		PatchVersion  string               `json:"patch_version"`
		ClientVersion string               `json:"client_version"`
		UptimeSeconds int64                `json:"uptime_seconds"`
	}{state, o.Kernel, o.Arch, version, c.cfg.ClientVersion, readUptime(c.cfg.UptimeFile)}
	var m catalog.Machine
	err := s.do(ctx, func(ctx context.Context, t target) error {
		return c.apiCall(ctx, t.url, t.token, http.MethodPost, "/v1/client/checkin", nil, in, &m)
	})
	if err != nil {
		return catalog.Machine{}, fmt.Errorf("check in %s: %w", state, err)
	}
	return m, nil
}

// fetch returns the path of a verified copy of p, downloading it unless a
// verified copy is already in the state directory.
func (c *Client) fetch(ctx context.Context, s *session, p catalog.Patch) (path string, downloaded bool, err error) {
	if err := ensureDir(c.cfg.StateDir); err != nil {
		return "", false, err
	}
	dir := filepath.Join(c.cfg.StateDir, PatchDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create patch directory: %w", err)
	}
	final := filepath.Join(dir, p.Digest[len("sha256:"):])
	switch got, err := hashFile(final); {
	case err == nil && got == p.Digest:
		return final, false, nil
	case err == nil:
		// A damaged copy: drop it and fetch a good one.
		if err := os.Remove(final); err != nil {
			return "", false, fmt.Errorf("remove damaged copy: %w", err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", false, err
	}
	c.removeDeadParts()
	err = s.do(ctx, func(ctx context.Context, t target) error {
		return c.download(ctx, t, p, final)
	})
	if err != nil {
		return "", false, err
	}
	return final, true, nil
}

// download streams the blob into a temporary file in the state directory
// while hashing it, and renames it to final only if it matches p.Digest.
// On any failure the temporary file is removed, so that the next node
// starts afresh.
func (c *Client) download(ctx context.Context, t target, p catalog.Patch, final string) (err error) {
	u, err := endpoint(t.url, "/v1/blobs/"+p.Digest, nil, c.cfg.Transport.RequireTLS)
	if err != nil {
		return err
	}
	// The stall timer runs from the request on, and each byte that
	// arrives restarts it (stallReader).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(c.cfg.DownloadStall, func() { cancel(errDownloadStalled) })
	defer stall.Stop()
	defer func() {
		if err != nil && errors.Is(context.Cause(ctx), errDownloadStalled) {
			err = fmt.Errorf("download %s: %w", p.Digest, unreachable(fmt.Errorf("%w for %v", errDownloadStalled, c.cfg.DownloadStall)))
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, err)
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set("User-Agent", "patchmesh-client/"+c.cfg.ClientVersion)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, unreachable(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: %w", p.Digest, ReadError(resp))
	}

	tmp, err := os.CreateTemp(c.cfg.StateDir, downloadPattern)
	if err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	total := p.Size
	if total <= 0 {
		total = resp.ContentLength
	}
	// A read that fails is the node failing mid-way; a write that fails is
	// this machine's disk, which no other node can help with.
	var body io.Reader = &downReader{&stallReader{r: resp.Body, t: stall, idle: c.cfg.DownloadStall}}
	if p.Size > 0 {
		// One byte more than promised is enough to know the server lies;
		// reading on would let it fill the disk.
		body = io.LimitReader(body, p.Size+1)
	}
	if c.cfg.Progress != nil {
		body = &progressReader{r: body, total: total, fn: c.cfg.Progress}
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, err)
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if p.Size > 0 && n != p.Size {
		return fmt.Errorf("%w: patch %s should be %d bytes, the server sent %d; the download was deleted", ErrDigestMismatch, p.Digest, p.Size, n)
	}
	if got != p.Digest {
		return fmt.Errorf("%w: patch %s, but the bytes received hash to %s; the download was deleted", ErrDigestMismatch, p.Digest, got)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("download %s: %w", p.Digest, err)
	}
	return syncDir(filepath.Dir(final))
}

// downloadPattern names a download in progress in the state directory.
const downloadPattern = ".download-*.part"

// removeDeadParts deletes the partial downloads of runs that were killed
// before they could (a download that fails removes its own): those not
// written for twice DownloadStall, which a live download in another run
// would have been abandoned by. Failures are left for the next run.
func (c *Client) removeDeadParts() {
	parts, _ := filepath.Glob(filepath.Join(c.cfg.StateDir, downloadPattern))
	for _, p := range parts {
		if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > 2*c.cfg.DownloadStall {
			os.Remove(p)
		}
	}
}

// hashFile returns the content address of the file at path.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// runHook runs the apply hook for the verified patch at path.
func (c *Client) runHook(ctx context.Context, hook, path string, p catalog.Patch) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", hook)
	cmd.Env = append(os.Environ(),
		"PATCHMESH_PATCH_FILE="+path,
		"PATCHMESH_PATCH_VERSION="+p.Version,
		"PATCHMESH_PATCH_DIGEST="+p.Digest,
	)
	cmd.Stdout, cmd.Stderr = c.cfg.HookStdout, c.cfg.HookStderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrApplyFailed, hook, err)
	}
	return nil
}

// downReader marks its reader's errors as the node failing.
type downReader struct{ r io.Reader }

// errDownloadStalled is why a download that went DownloadStall without a
// byte was abandoned.
var errDownloadStalled = errors.New("no data received")

// stallReader restarts the download's stall timer t with every byte read.
type stallReader struct {
	r    io.Reader
	t    *time.Timer
	idle time.Duration
}

func (s *stallReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if n > 0 {
		s.t.Reset(s.idle)
	}
	return n, err
}

func (d *downReader) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	if err != nil && err != io.EOF {
		err = unreachable(err)
	}
	return n, err
}

// progressReader reports how many bytes went through it.
type progressReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if n > 0 {
		p.fn(p.done, p.total)
	}
	return n, err
}
