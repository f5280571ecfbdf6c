// Package objblob is the blob driver for object stores (S3 and OpenStack
// Swift): everything the two have in common, written once against a small
// Bucket interface that blob/s3blob and blob/swiftblob implement.
//
// Layout under the configured prefix:
//
//	blobs/sha256/<hex>    committed blobs; digest order is key order
//	staging/<id>          an upload in progress (the bytes for Swift, a
//	                      marker naming the multipart upload for S3)
//	refs/<hex>/<node>     shared mode: node <node> names the blob
//	trash/<hex>/<id>      shared mode: a blob being deleted, kept until the
//	                      delete is known to be safe
//	probe/<node>-<id>     the health probe's tiny object
//
// Why this shape:
//   - A blob becomes visible under its digest only through one atomic step
//     of the store (a multipart complete, a whole PUT or a server-side
//     copy of a finished staging object), so a reader sees no object or the
//     whole object, never a part. blob.Put checks the digest before Commit.
//   - A staging id is unique per upload, so concurrent uploads of one digest
//     never touch each other's staging; each completes onto the same key
//     with the same bytes, which leaves one copy.
//   - A crash mid-upload leaves a staging entry that no running process
//     names. Open and the node's housekeeping sweep those older than
//     AbandonAfter: with nodes sharing a bucket, a younger one may be
//     another node's live upload.
//   - Reading costs one request: Open is one GET of the whole object, whose
//     answer carries the size and modification time; the reader seeks by
//     arithmetic and issues a ranged GET only when a read starts somewhere
//     the open body is not.
//
// Shared mode (several nodes of one data centre on one bucket) is described
// at Options.Node and Store.Remove.
//
// The package does not check digests (blob.Put does) and does not decide who
// may read a blob.
package objblob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

// ErrRange is what Bucket.Get returns for a range the object does not
// have: blob.ErrRangeNotSatisfiable.
var ErrRange = blob.ErrRangeNotSatisfiable

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key      string
	Size     int64
	Modified time.Time
	// Offset and Length say which bytes a Get's body holds: the range
	// asked for, or all of them.
	Offset, Length int64
}

// ByteRange is the HTTP Range header value for bytes off to the end.
func ByteRange(off int64) string { return "bytes=" + strconv.FormatInt(off, 10) + "-" }

// ParseContentRange reads "bytes first-last/total" into info.
func ParseContentRange(cr string, info *ObjectInfo) error {
	var first, last, total int64
	if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &total); err != nil || first < 0 || last < first || total <= last {
		return fmt.Errorf("bad Content-Range %q", cr)
	}
	info.Offset, info.Length, info.Size = first, last-first+1, total
	return nil
}

// Upload streams one object that is invisible until Complete returns nil.
type Upload interface {
	io.Writer
	// Complete makes the written bytes visible under the upload's key.
	Complete(ctx context.Context) error
	// Abort discards the written bytes.
	Abort(ctx context.Context) error
}

// Bucket is what the driver needs of an object store. Keys are full keys,
// prefix included. A missing object is blob.ErrNotFound.
type Bucket interface {
	// Upload starts writing key, using staging (a key under staging/) for
	// whatever it must keep while the upload is open.
	Upload(ctx context.Context, key, staging string) (Upload, error)
	// Discard removes an abandoned staging entry and whatever it stands
	// for (an S3 multipart upload).
	Discard(ctx context.Context, staging string) error
	// Get reads key, or the single byte range rng ("bytes=…", an HTTP
	// Range value; "" for all). Its info's Size is the whole object's
	// size; Offset and Length say what the body holds. A range the object
	// does not have is ErrRange.
	Get(ctx context.Context, key string, rng string) (io.ReadCloser, ObjectInfo, error)
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// Put stores a small object whole.
	Put(ctx context.Context, key string, b []byte) error
	// Copy copies src to dst on the server.
	Copy(ctx context.Context, src, dst string) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for each object under prefix in key order, paging as
	// needed, until fn returns an error, which it then returns.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
}

// Options configures the driver.
type Options struct {
	// Prefix is prepended to every key, so that one bucket can hold other
	// things, or several meshes. Empty or ending in "/".
	Prefix string
	// Node is this node's name. With Shared set, it names the node's
	// claims on blobs (refs/<hex>/<node>): it must be unique among the
	// nodes sharing the bucket, as node names are in a mesh anyway.
	Node string
	// Shared says other nodes use the same bucket and prefix. A blob is
	// then deleted only when no node names it any more (see Remove).
	Shared bool
	// AbandonAfter is how long a staging entry may exist before a sweep
	// takes it for a crash leftover. It must exceed the longest upload.
	// Default 1 hour.
	AbandonAfter time.Duration
	// Log receives the driver's warnings. Default: discarded.
	Log *slog.Logger
}

// DefaultAbandonAfter is Options.AbandonAfter's default.
const DefaultAbandonAfter = time.Hour

// Store is a blob.Store on an object store. It is safe for concurrent use.
type Store struct {
	b    Bucket
	opts Options
	log  *slog.Logger
}

var _ blob.Store = (*Store)(nil)

// New returns a store on b after sweeping abandoned staging entries; the
// sweep is also the first request, so a store that cannot be reached (or
// refuses the credentials) fails here, at start.
func New(ctx context.Context, b Bucket, opts Options) (*Store, error) {
	if opts.Prefix != "" && !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.AbandonAfter == 0 {
		opts.AbandonAfter = DefaultAbandonAfter
	}
	if opts.AbandonAfter < 0 {
		return nil, fmt.Errorf("objblob: negative AbandonAfter %s", opts.AbandonAfter)
	}
	if opts.Shared && (opts.Node == "" || strings.Contains(opts.Node, "/")) {
		return nil, fmt.Errorf("objblob: shared mode needs a node name without '/', got %q", opts.Node)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Store{b: b, opts: opts, log: opts.Log}
	if _, err := s.Sweep(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Prefix is the key prefix, "" or ending in "/".
func (s *Store) Prefix() string { return s.opts.Prefix }

// Bucket returns the store's bucket, for tests and tools.
func (s *Store) Bucket() Bucket { return s.b }

func (s *Store) key(d blob.Digest) (string, error) {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return "", err
	}
	return s.opts.Prefix + "blobs/sha256/" + d.Hex(), nil
}

func (s *Store) refPrefix(d blob.Digest) string { return s.opts.Prefix + "refs/" + d.Hex() + "/" }

func (s *Store) refKey(d blob.Digest) string { return s.refPrefix(d) + s.opts.Node }

// newID is unique per upload: a time for humans reading a listing and
// random bits so that two processes never collide.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(b[:])
}

// Sweep discards staging entries older than AbandonAfter and reports how
// many it removed. It also clears what a process that died mid-operation
// left older than that: probe objects, and trash copies of a delete cut
// short — restoring the blob from its trash first if the blob is gone but a
// node still claims it (the delete's last step never ran).
func (s *Store) Sweep(ctx context.Context) (int, error) {
	cutoff := time.Now().Add(-s.opts.AbandonAfter)
	old := func(prefix string) ([]string, error) {
		var keys []string
		err := s.b.List(ctx, s.opts.Prefix+prefix, func(o ObjectInfo) error {
			if o.Modified.Before(cutoff) {
				keys = append(keys, o.Key)
			}
			return nil
		})
		return keys, err
	}
	stale, err := old("staging/")
	if err != nil {
		return 0, fmt.Errorf("objblob: sweep staging: %w", err)
	}
	n := 0
	var errs []error
	for _, k := range stale {
		if err := s.b.Discard(ctx, k); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	probes, err := old("probe/")
	errs = append(errs, err)
	for _, k := range probes {
		errs = append(errs, s.b.Delete(ctx, k))
	}
	trash, err := old("trash/")
	errs = append(errs, err)
	for _, k := range trash {
		errs = append(errs, s.sweepTrash(ctx, k))
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("objblob: sweep: %w", err)
	}
	return n, nil
}

// sweepTrash removes trash/<hex>/<id>, first restoring the blob from it if
// the blob is missing while a node claims it.
func (s *Store) sweepTrash(ctx context.Context, k string) error {
	hexd, _, _ := strings.Cut(strings.TrimPrefix(k, s.opts.Prefix+"trash/"), "/")
	d, err := blob.ParseDigest("sha256:" + hexd)
	if err != nil {
		return nil // not ours
	}
	key, _ := s.key(d)
	if _, err := s.b.Head(ctx, key); errors.Is(err, blob.ErrNotFound) {
		claims, err := s.Claims(ctx, d)
		if err != nil {
			return err
		}
		if len(claims) > 0 {
			if err := s.b.Copy(ctx, k, key); err != nil {
				return err
			}
			s.log.LogAttrs(ctx, slog.LevelWarn, "blob restored from the trash of a delete cut short",
				slog.String("digest", string(d)), slog.Any("nodes", claims))
		}
	} else if err != nil {
		return err
	}
	return s.b.Delete(ctx, k)
}

// Staged counts staging entries, old or new: the uploads in progress and
// the leftovers of crashed ones.
func (s *Store) Staged(ctx context.Context) (int, error) {
	n := 0
	err := s.b.List(ctx, s.opts.Prefix+"staging/", func(ObjectInfo) error { n++; return nil })
	return n, err
}

// Create starts an upload. Nothing is sent to the store that a reader
// could see before Commit.
func (s *Store) Create(ctx context.Context, d blob.Digest) (blob.Writer, error) {
	key, err := s.key(d)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	up, err := s.b.Upload(ctx, key, s.opts.Prefix+"staging/"+newID())
	if err != nil {
		return nil, fmt.Errorf("objblob: stage %s: %w", d, err)
	}
	return &writer{s: s, up: up, d: d}, nil
}

type writer struct {
	s    *Store
	up   Upload
	d    blob.Digest
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("objblob: write after commit or abort")
	}
	return w.up.Write(p)
}

// Commit claims the blob first in shared mode, so that a concurrent delete
// by another node either sees the claim or is seen to have happened before
// the blob is completed again (see Remove), then completes the upload.
func (w *writer) Commit(ctx context.Context) error {
	if w.done {
		return errors.New("objblob: commit after commit or abort")
	}
	err := ctx.Err()
	if err == nil && w.s.opts.Shared {
		err = w.s.claim(ctx, w.d)
	}
	if err == nil {
		err = w.up.Complete(ctx)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("objblob: commit %s: %w", w.d, err), w.Abort())
	}
	w.done = true
	return nil
}

// Abort discards the staged bytes. It runs on a context of its own: it is
// mostly called because the upload's context ended.
func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.up.Abort(ctx); err != nil {
		return fmt.Errorf("objblob: abort %s: %w (a sweep removes it after %s)", w.d, err, w.s.opts.AbandonAfter)
	}
	return nil
}

// Claim records that this node names d (shared mode; a no-op otherwise).
// A node that finds a blob already present in the shared bucket, written by
// another node, calls it so that the other's delete keeps the blob.
func (s *Store) Claim(ctx context.Context, d blob.Digest) error {
	if _, err := s.key(d); err != nil {
		return err
	}
	if !s.opts.Shared {
		return nil
	}
	return s.claim(ctx, d)
}

func (s *Store) claim(ctx context.Context, d blob.Digest) error {
	if err := s.b.Put(ctx, s.refKey(d), []byte(s.opts.Node)); err != nil {
		return fmt.Errorf("claim %s: %w", d, err)
	}
	return nil
}

// Claims lists the nodes that name d in shared mode.
func (s *Store) Claims(ctx context.Context, d blob.Digest) ([]string, error) {
	if _, err := s.key(d); err != nil {
		return nil, err
	}
	var nodes []string
	p := s.refPrefix(d)
	err := s.b.List(ctx, p, func(o ObjectInfo) error {
		nodes = append(nodes, strings.TrimPrefix(o.Key, p))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("objblob: claims on %s: %w", d, err)
	}
	return nodes, nil
}

// Open is one GET of the whole object; see reader.
func (s *Store) Open(ctx context.Context, d blob.Digest) (io.ReadSeekCloser, blob.Info, error) {
	key, err := s.key(d)
	if err != nil {
		return nil, blob.Info{}, err
	}
	body, oi, err := s.b.Get(ctx, key, "")
	if err != nil {
		return nil, blob.Info{}, notFound(d, err)
	}
	return &reader{ctx: ctx, b: s.b, key: key, size: oi.Size, body: body}, info(d, oi), nil
}

// OpenRange reads d, or one byte range of it, with one request.
func (s *Store) OpenRange(ctx context.Context, d blob.Digest, rng string) (io.ReadCloser, blob.Section, error) {
	key, err := s.key(d)
	if err != nil {
		return nil, blob.Section{}, err
	}
	body, oi, err := s.b.Get(ctx, key, rng)
	if err != nil {
		return nil, blob.Section{}, notFound(d, err)
	}
	return body, blob.Section{Info: info(d, oi), Offset: oi.Offset, Length: oi.Length}, nil
}

func (s *Store) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	key, err := s.key(d)
	if err != nil {
		return blob.Info{}, err
	}
	oi, err := s.b.Head(ctx, key)
	if err != nil {
		return blob.Info{}, notFound(d, err)
	}
	return info(d, oi), nil
}

// Remove deletes d. Alone on a bucket it deletes the object.
//
// In shared mode it drops this node's claim and deletes the object only if
// no other node's claim remains, in three steps: copy the object to trash,
// delete it, look at the claims again. A node that committed or claimed d
// meanwhile wrote its claim before completing (Commit) or after seeing the
// blob (Claim); if the second look finds a claim, that node may have seen
// the blob before the delete, so it is restored from trash. Otherwise every
// later claim comes after the delete, and its node sees the blob absent and
// uploads it again. So a delete never takes a blob from under a node that
// names it, at the price of two copies per real delete and a moment in
// which a racing reader may see the blob missing. Trash is then removed.
func (s *Store) Remove(ctx context.Context, d blob.Digest) error {
	key, err := s.key(d)
	if err != nil {
		return err
	}
	if !s.opts.Shared {
		if _, err := s.b.Head(ctx, key); err != nil {
			return notFound(d, err)
		}
		if err := s.b.Delete(ctx, key); err != nil {
			return fmt.Errorf("objblob: remove %s: %w", d, err)
		}
		return nil
	}
	if err := s.b.Delete(ctx, s.refKey(d)); err != nil {
		return fmt.Errorf("objblob: remove %s: drop claim: %w", d, err)
	}
	claims, err := s.Claims(ctx, d)
	if err != nil {
		return err
	}
	if len(claims) > 0 {
		s.log.LogAttrs(ctx, slog.LevelInfo, "blob kept: other nodes sharing the bucket name it",
			slog.String("digest", string(d)), slog.Any("nodes", claims))
		return nil
	}
	if _, err := s.b.Head(ctx, key); err != nil {
		return notFound(d, err)
	}
	trash := s.opts.Prefix + "trash/" + d.Hex() + "/" + newID()
	if err := s.b.Copy(ctx, key, trash); err != nil {
		return fmt.Errorf("objblob: remove %s: %w", d, notFound(d, err))
	}
	if err := s.b.Delete(ctx, key); err != nil {
		return errors.Join(fmt.Errorf("objblob: remove %s: %w", d, err), s.b.Delete(ctx, trash))
	}
	claims, err = s.Claims(ctx, d)
	if err == nil && len(claims) > 0 {
		err = s.b.Copy(ctx, trash, key)
		s.log.LogAttrs(ctx, slog.LevelWarn, "blob restored: a node sharing the bucket claimed it during the delete",
			slog.String("digest", string(d)), slog.Any("nodes", claims))
	}
	if err != nil {
		// Keep the trash: it is the only copy a claimant may need.
		return fmt.Errorf("objblob: remove %s: restore check: %w (copy kept at %s)", d, err, trash)
	}
	if err := s.b.Delete(ctx, trash); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "could not remove a deleted blob's trash copy",
			slog.String("key", trash), slog.String("error", err.Error()))
	}
	return nil
}

// Enumerate lists committed blobs in digest order: keys under blobs/sha256/
// are the hex digits, which sort as the digests do.
func (s *Store) Enumerate(ctx context.Context, fn func(blob.Info) error) error {
	p := s.opts.Prefix + "blobs/sha256/"
	var fnErr error
	err := s.b.List(ctx, p, func(o ObjectInfo) error {
		d, err := blob.ParseDigest("sha256:" + strings.TrimPrefix(o.Key, p))
		if err != nil {
			return nil // not ours
		}
		if err := fn(info(d, o)); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("objblob: enumerate: %w", err)
	}
	return nil
}

// Probe writes, reads back and deletes a tiny object, so that a bucket
// that vanished or stopped accepting writes shows as down.
func (s *Store) Probe(ctx context.Context) error {
	node := s.opts.Node
	if node == "" {
		node = "node"
	}
	key := s.opts.Prefix + "probe/" + node + "-" + newID()
	want := []byte("patchmesh probe " + key)
	if err := s.b.Put(ctx, key, want); err != nil {
		return fmt.Errorf("objblob: probe write: %w", err)
	}
	defer s.b.Delete(context.WithoutCancel(ctx), key)
	body, _, err := s.b.Get(ctx, key, "")
	if err != nil {
		return fmt.Errorf("objblob: probe read: %w", err)
	}
	got, err := io.ReadAll(io.LimitReader(body, int64(len(want))+1))
	body.Close()
	if err != nil {
		return fmt.Errorf("objblob: probe read: %w", err)
	}
	if !bytes.Equal(got, want) {
		return errors.New("objblob: probe read back different bytes")
	}
	if err := s.b.Delete(ctx, key); err != nil {
		return fmt.Errorf("objblob: probe delete: %w", err)
	}
	return nil
}

func info(d blob.Digest, o ObjectInfo) blob.Info {
	return blob.Info{Digest: d, Size: o.Size, Modified: o.Modified}
}

func notFound(d blob.Digest, err error) error {
	if errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("objblob: %s: %w", d, blob.ErrNotFound)
	}
	if errors.Is(err, ErrRange) {
		return fmt.Errorf("objblob: %s: %w", d, ErrRange)
	}
	return fmt.Errorf("objblob: %s: %w", d, err)
}

// reader is a blob being read. It holds at most one response body, at
// bodyAt; a read elsewhere replaces it with a ranged GET from there, except
// that a short skip forward reads through the gap instead.
type reader struct {
	ctx    context.Context
	b      Bucket
	key    string
	size   int64
	pos    int64
	body   io.ReadCloser
	bodyAt int64
	closed bool
}

// skipLimit is the largest gap read through rather than re-requested: a
// request costs about a round trip, which is worth this much transfer.
const skipLimit = 256 << 10

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("objblob: read after close")
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.body != nil && r.bodyAt != r.pos {
		if gap := r.pos - r.bodyAt; gap > 0 && gap <= skipLimit {
			if n, err := io.CopyN(io.Discard, r.body, gap); err != nil {
				r.bodyAt += n
				r.drop()
			} else {
				r.bodyAt = r.pos
			}
		} else {
			r.drop()
		}
	}
	if r.body == nil {
		body, _, err := r.b.Get(r.ctx, r.key, ByteRange(r.pos))
		if err != nil {
			return 0, fmt.Errorf("objblob: read %s at %d: %w", r.key, r.pos, err)
		}
		r.body, r.bodyAt = body, r.pos
	}
	if left := r.size - r.pos; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := r.body.Read(p)
	r.pos += int64(n)
	r.bodyAt += int64(n)
	if err == io.EOF {
		r.drop()
		if r.pos < r.size {
			return n, fmt.Errorf("objblob: read %s: %w at %d of %d", r.key, io.ErrUnexpectedEOF, r.pos, r.size)
		}
		err = nil
	}
	if err != nil {
		r.drop()
		return n, fmt.Errorf("objblob: read %s: %w", r.key, err)
	}
	return n, nil
}

func (r *reader) drop() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
}

func (r *reader) Seek(off int64, whence int) (int64, error) {
	var at int64
	switch whence {
	case io.SeekStart:
		at = off
	case io.SeekCurrent:
		at = r.pos + off
	case io.SeekEnd:
		at = r.size + off
	default:
		return 0, fmt.Errorf("objblob: seek: bad whence %d", whence)
	}
	if at < 0 {
		return 0, fmt.Errorf("objblob: seek to %d: before the start", at)
	}
	r.pos = at
	return at, nil
}

func (r *reader) Close() error {
	r.closed = true
	r.drop()
	return nil
}
