// Package fsblob is the filesystem blob driver, patchmesh's default.
//
// A blob lives at <dir>/sha256/<first 2 hex>/<64 hex>; the two-digit fan-out
// keeps directories small at any catalog size. Uploads are staged in
// <dir>/tmp, on the same filesystem, so that committing is one atomic rename:
// a reader sees either no file or the whole file, never a part of one.
//
// The package owns the layout, staging and durability (fsync of the file and
// of the directory that names it). It does not check digests: blob.Put does,
// before it commits. It does not decide who may read a blob.
//
// Open hands out the *os.File itself, so that net/http can send a blob with
// sendfile rather than copying it through user space.
package fsblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/patchmesh/patchmesh/blob"
)

const (
	dirMode  = 0o750
	fileMode = 0o640
	// tempPrefix names staged uploads, so a sweep removes only our own files.
	tempPrefix = "put-"
)

// Store is a blob.Store on a local directory. It is safe for concurrent use.
type Store struct {
	root string // <dir>/sha256
	tmp  string // <dir>/tmp
}

var _ blob.Store = (*Store)(nil)

// Open prepares dir (creating it if needed) and returns a store on it.
//
// Open removes every staged upload left in <dir>/tmp. A staged file is named
// only by the Writer that created it and lives from Create to Commit or
// Abort inside one running process, so a file present before this store has
// made any Writer was left by a process that crashed mid-upload; nothing will
// ever commit or remove it, and without the sweep each crash would leak disk
// for good. This assumes one patchmesh process serves a directory at a time,
// which is how a node is run.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("fsblob: empty directory")
	}
	s := &Store{root: filepath.Join(dir, "sha256"), tmp: filepath.Join(dir, "tmp")}
	for _, d := range []string{dir, s.root, s.tmp} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("fsblob: open %s: %w", dir, err)
		}
	}
	if err := s.sweep(); err != nil {
		return nil, fmt.Errorf("fsblob: open %s: %w", dir, err)
	}
	return s, nil
}

// sweep removes staged uploads left by a crashed process (see Open).
func (s *Store) sweep() error {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return fmt.Errorf("sweep staging: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(s.tmp, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweep staging: %w", err)
	}
	return nil
}

// path returns where d lives. It parses d first: a string that is not a
// digest must never become a path.
func (s *Store) path(d blob.Digest) (string, error) {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return "", err
	}
	h := d.Hex()
	return filepath.Join(s.root, h[:2], h), nil
}

// Create stages a new blob in <dir>/tmp.
func (s *Store) Create(ctx context.Context, d blob.Digest) (blob.Writer, error) {
	target, err := s.path(d)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tmp, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("fsblob: stage %s: %w", d, err)
	}
	// CreateTemp makes 0600; blobs are 0640 so that a backup or web server
	// in the node's group can read them. Chmod is not subject to the umask.
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("fsblob: stage %s: %w", d, err)
	}
	return &writer{f: f, target: target, digest: d}, nil
}

// writer stages one blob in a temp file.
type writer struct {
	f      *os.File
	target string
	digest blob.Digest
	done   bool // Commit succeeded or Abort ran: later calls do nothing
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("fsblob: write after commit or abort")
	}
	return w.f.Write(p)
}

// OpenStaged opens the staged file once more, for reading while it grows.
// The handle outlives the rename of Commit and the removal of Abort.
func (w *writer) OpenStaged() (blob.ReaderAtCloser, error) {
	if w.done {
		return nil, errors.New("fsblob: open staged after commit or abort")
	}
	return os.Open(w.f.Name())
}

// Commit makes the staged file durable and moves it into place. If Commit
// fails the staged file is removed, as Abort would.
func (w *writer) Commit(ctx context.Context) error {
	if w.done {
		return errors.New("fsblob: commit after commit or abort")
	}
	if err := w.commit(ctx); err != nil {
		return errors.Join(fmt.Errorf("fsblob: commit %s: %w", w.digest, err), w.Abort())
	}
	w.done = true
	return nil
}

func (w *writer) commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// The data must be on disk before the name is: otherwise a crash after
	// the rename could leave a full-length file of garbage under a digest.
	if err := w.f.Sync(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return err
	}
	if _, err := os.Stat(w.target); err == nil {
		// Another upload of the same digest won. Its bytes hashed to the
		// same digest, so ours add nothing: drop them and succeed.
		return os.Remove(w.f.Name())
	}
	dir := filepath.Dir(w.target)
	created := false
	if err := os.Mkdir(dir, dirMode); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return err
	}
	// Two uploads of one digest can both pass the Stat above; the second
	// rename then replaces an identical file, which readers holding the
	// first one open do not notice.
	if err := os.Rename(w.f.Name(), w.target); err != nil {
		return err
	}
	if created {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	// The rename is durable only once the directory holding the new name is.
	return syncDir(dir)
}

// Abort removes the staged file. It is a no-op after a successful Commit.
func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close() // may already be closed by a failed Commit
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsblob: abort %s: %w", w.digest, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// Open returns the blob's *os.File, so that net/http can use sendfile.
func (s *Store) Open(ctx context.Context, d blob.Digest) (io.ReadSeekCloser, blob.Info, error) {
	p, err := s.path(d)
	if err != nil {
		return nil, blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, blob.Info{}, err
	}
	f, err := openRead(p)
	if err != nil {
		return nil, blob.Info{}, notFound(d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blob.Info{}, fmt.Errorf("fsblob: open %s: %w", d, err)
	}
	return f, info(d, fi), nil
}

// Stat reports on a committed blob.
func (s *Store) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	p, err := s.path(d)
	if err != nil {
		return blob.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return blob.Info{}, notFound(d, err)
	}
	return info(d, fi), nil
}

// Remove deletes a committed blob. Readers that already have it open keep
// reading it to the end.
func (s *Store) Remove(ctx context.Context, d blob.Digest) error {
	p, err := s.path(d)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return notFound(d, err)
	}
	return nil
}

// Enumerate lists committed blobs in digest order. Hex digits sort the same
// as the digests they spell, and os.ReadDir sorts by name, so walking the
// fan-out directories in order yields digest order without a global sort.
// Files that are not named like a blob are skipped.
func (s *Store) Enumerate(ctx context.Context, fn func(blob.Info) error) error {
	prefixes, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("fsblob: enumerate: %w", err)
	}
	for _, p := range prefixes {
		if !p.IsDir() || len(p.Name()) != 2 {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.root, p.Name()))
		if err != nil {
			return fmt.Errorf("fsblob: enumerate: %w", err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			d, err := blob.ParseDigest("sha256:" + e.Name())
			if err != nil || !strings.HasPrefix(e.Name(), p.Name()) || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			} else if err != nil {
				return fmt.Errorf("fsblob: enumerate: %w", err)
			}
			if err := fn(info(d, fi)); err != nil {
				return err
			}
		}
	}
	return nil
}

func info(d blob.Digest, fi fs.FileInfo) blob.Info {
	return blob.Info{Digest: d, Size: fi.Size(), Modified: fi.ModTime()}
}

func notFound(d blob.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsblob: %s: %w", d, blob.ErrNotFound)
	}
	return fmt.Errorf("fsblob: %s: %w", d, err)
}

// Probe writes, reads back and removes a small file in the staging
// directory, and checks that the blob directory is there: a directory that
// vanished or turned read-only shows as down, which a Stat of a missing
// blob would not.
func (s *Store) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Stat(s.root); err != nil {
		return fmt.Errorf("fsblob: probe: %w", err)
	}
	f, err := os.CreateTemp(s.tmp, tempPrefix+"probe-*")
	if err != nil {
		return fmt.Errorf("fsblob: probe: %w", err)
	}
	defer os.Remove(f.Name())
	want := []byte("patchmesh probe")
	_, err = f.Write(want)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsblob: probe write: %w", err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || string(got) != string(want) {
		return fmt.Errorf("fsblob: probe read back %q: %v", got, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("fsblob: probe remove: %w", err)
	}
	return nil
}
