package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/internal/objtest"
	"github.com/patchmesh/patchmesh/node"
)

// writeConfig writes a node config whose blobs section is blobs (YAML).
func writeConfig(t *testing.T, name, blobs string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, name+".yaml")
	body := fmt.Sprintf("node:\n  name: copy-test\n  data_dir: %s\nblobs:\n%s", dir, blobs)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func openStore(t *testing.T, path string) blob.Store {
	t.Helper()
	cfg, err := node.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, c, err := node.OpenBlobStore(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return s
}

type copyResult struct {
	Copied, Skipped, Failed int
	Bytes                   int64
}

func storageCopy(t *testing.T, from, to string) (copyResult, int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"storage", "copy", "--from", from, "--to", to, "--output", "json"}, &out, &errb)
	var r copyResult
	if code == exitOK || out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("storage copy output %q: %v (stderr %s)", out.String(), err, errb.String())
		}
	}
	return r, code, errb.String()
}

// Blobs move fs → S3 → Swift → fs intact; a second run copies nothing; a
// corrupt source blob is refused and the rest still copied.
func TestStorageCopyBetweenDrivers(t *testing.T) {
	s3 := objtest.S3Server(t)
	sw := objtest.SwiftServer(t)
	fsDir := t.TempDir()
	fsCfg := writeConfig(t, "fs", "  driver: fs\n  path: "+fsDir+"\n")
	s3Cfg := writeConfig(t, "s3", fmt.Sprintf("  driver: s3\n  s3_bucket: %s\n  s3_endpoint: %s\n  s3_secure: false\n  s3_path_style: true\n  s3_region: us-east-1\n  s3_access_key: %s\n  s3_secret_key: %s\n  s3_prefix: copied/\n",
		s3.Bucket(t), s3.Endpoint, s3.AccessKey, s3.SecretKey))
	swCfg := writeConfig(t, "swift", fmt.Sprintf("  driver: swift\n  swift_auth_url: %s\n  swift_user: %s\n  swift_key: %s\n  swift_container: %s\n",
		sw.AuthURL, sw.User, sw.Key, sw.Container(t)))
	backDir := t.TempDir()
	backCfg := writeConfig(t, "back", "  driver: fs\n  path: "+backDir+"\n")

	src := openStore(t, fsCfg)
	want := map[blob.Digest][]byte{}
	var total int64
	for i := range 5 {
		b := bytes.Repeat([]byte(fmt.Sprintf("patch %d ", i)), 1000*(i+1))
		d := blob.FromBytes(b)
		if _, err := blob.Put(context.Background(), src, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		want[d] = b
		total += int64(len(b))
	}
	for _, hop := range []struct{ from, to string }{{fsCfg, s3Cfg}, {s3Cfg, swCfg}, {swCfg, backCfg}} {
		r, code, stderr := storageCopy(t, hop.from, hop.to)
		if code != exitOK || r.Copied != 5 || r.Skipped != 0 || r.Bytes != total {
			t.Fatalf("copy %s → %s: exit %d, %+v (%s); want 5 copied, %d bytes", filepath.Base(hop.from), filepath.Base(hop.to), code, r, stderr, total)
		}
		r, code, _ = storageCopy(t, hop.from, hop.to)
		if code != exitOK || r.Copied != 0 || r.Skipped != 5 {
			t.Fatalf("second copy %s → %s: exit %d, %+v; want all 5 skipped (resumable)", filepath.Base(hop.from), filepath.Base(hop.to), code, r)
		}
	}
	back := openStore(t, backCfg)
	for d, b := range want {
		rc, _, err := back.Open(context.Background(), d)
		if err != nil {
			t.Fatalf("after three hops %s: %v", d, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, b) {
			t.Errorf("after three hops %s has %d bytes, want the %d put", d, len(got), len(b))
		}
	}

	// A blob corrupted at the source is refused by the digest check.
	bad := []byte("to be corrupted")
	bd := blob.FromBytes(bad)
	if _, err := blob.Put(context.Background(), src, bd, bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	h := bd.Hex()
	if err := os.WriteFile(filepath.Join(fsDir, "sha256", h[:2], h), []byte("To be corrupted"), 0o640); err != nil {
		t.Fatal(err)
	}
	r, code, stderr := storageCopy(t, fsCfg, s3Cfg)
	if code == exitOK || r.Failed != 1 || r.Skipped != 5 || !strings.Contains(stderr, "digest mismatch") {
		t.Fatalf("copy with a corrupt source blob: exit %d, %+v, stderr %q; want a failure naming the digest mismatch", code, r, stderr)
	}
	if _, err := openStore(t, s3Cfg).Stat(context.Background(), bd); err == nil {
		t.Errorf("the corrupt blob reached the destination")
	}
}

func TestStorageCopyUsage(t *testing.T) {
	for _, args := range [][]string{{"storage"}, {"storage", "move"}, {"storage", "copy", "--from", "x.yaml"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != exitUsage {
			t.Errorf("patchmesh %v: exit %d, want %d (usage)", args, code, exitUsage)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"storage", "copy", "--from", "/nonexistent.yaml", "--to", "/nonexistent.yaml"}, &out, &errb); code == exitOK {
		t.Errorf("copy with missing configs succeeded")
	}
}

// A source config whose file store does not exist (a mistyped data dir) is
// refused, rather than copy nothing, call that a success and make an empty
// store where it pointed.
func TestStorageCopyFromAMissingSourceIsRefused(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nonexist")
	from, to := filepath.Join(dir, "from.yaml"), filepath.Join(dir, "to.yaml")
	if err := os.WriteFile(from, []byte("node: {name: a, data_dir: "+missing+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, []byte("node: {name: b, data_dir: "+filepath.Join(dir, "to")+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"storage", "copy", "--from", from, "--to", to}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "no blob directory") {
		t.Errorf("copy from a missing store: exit %d, stdout %q, stderr %q; want %d naming the missing directory", code, out.String(), errb.String(), exitUsage)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("the missing source was created: %v", err)
	}
}
