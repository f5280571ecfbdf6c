package fsblob

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/blobtest"
)

func open(t *testing.T) blob.Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// staged counts files in the staging directory.
func staged(t *testing.T, s blob.Store) int {
	t.Helper()
	entries, err := os.ReadDir(s.(*Store).tmp)
	if err != nil {
		t.Fatalf("reading staging dir: %v", err)
	}
	return len(entries)
}

func TestContract(t *testing.T) {
	blobtest.RunWith(t, open, blobtest.Options{Leftovers: staged})
}

// A crash mid-upload leaves a temp file that no Writer will ever commit or
// remove; the next Open must sweep it, and must leave committed blobs alone.
func TestOpenSweepsCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b := []byte("committed before the crash")
	d := blob.FromBytes(b)
	if _, err := blob.Put(ctx, s, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	// The crash: a writer that has written and is never committed or aborted.
	w, err := s.Create(ctx, blob.FromBytes([]byte("in flight")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("in fl")); err != nil {
		t.Fatal(err)
	}
	if n := staged(t, s); n != 1 {
		t.Fatalf("staged files before restart = %d, want 1", n)
	}

	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if n := staged(t, s2); n != 0 {
		t.Errorf("staged files after reopen = %d, want 0 (crash leftovers swept)", n)
	}
	if _, err := s2.Stat(ctx, d); err != nil {
		t.Errorf("committed blob after reopen: Stat error = %v, want nil", err)
	}
}

// The layout is part of the driver's promise to operators (backups, manual
// repair): dir/sha256/<2 hex>/<64 hex>, directories 0750, files 0640.
func TestLayoutAndModes(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte("layout")
	d := blob.FromBytes(b)
	if _, err := blob.Put(context.Background(), s, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "sha256", d.Hex()[:2], d.Hex())
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("blob not at %s: %v", p, err)
	}
	if got := fi.Mode().Perm(); got != 0o640 {
		t.Errorf("blob file mode = %o, want 640", got)
	}
	for _, sub := range []string{"sha256", "tmp", filepath.Join("sha256", d.Hex()[:2])} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o750 {
			t.Errorf("%s mode = %o, want 750", sub, got)
		}
	}
}

// net/http sends a body with sendfile only from a bare *os.File.
func TestOpenReturnsOSFile(t *testing.T) {
	s := open(t)
	b := []byte("sendfile")
	d := blob.FromBytes(b)
	if _, err := blob.Put(context.Background(), s, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, ok := r.(*os.File); !ok {
		t.Errorf("Open returned %T, want *os.File", r)
	}
}

// Stray files in the blob tree (an operator's copy, an editor's backup)
// are not blobs and must not be listed as such.
func TestEnumerateSkipsStrayFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte("real")
	d := blob.FromBytes(b)
	if _, err := blob.Put(context.Background(), s, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	other := blob.FromBytes([]byte("other")).Hex()
	strays := []string{
		filepath.Join("sha256", d.Hex()[:2], d.Hex()+".bak"),
		filepath.Join("sha256", d.Hex()[:2], other), // wrong fan-out directory
		filepath.Join("sha256", "README"),
	}
	for _, p := range strays {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	var got []blob.Digest
	if err := s.Enumerate(context.Background(), func(i blob.Info) error {
		got = append(got, i.Digest)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != d {
		t.Errorf("Enumerate = %v, want only %s", got, d)
	}
}

func TestOpenRejectsEmptyDir(t *testing.T) {
	if _, err := Open(""); err == nil {
		t.Errorf("Open(\"\") succeeded, want an error")
	}
}

func BenchmarkPut(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	blobtest.BenchPut(b, s, 8<<20)
}

func BenchmarkRead(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	blobtest.BenchRead(b, s, 8<<20)
}
