package s3blob

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/blobtest"
	"github.com/patchmesh/patchmesh/blob/objblob"
	"github.com/patchmesh/patchmesh/blob/objblob/objblobtest"
	"github.com/patchmesh/patchmesh/internal/objtest"
)

// options returns driver options for a fresh bucket on the test MinIO.
func options(t testing.TB) Options {
	srv := objtest.S3Server(t)
	return Options{
		Bucket: srv.Bucket(t), Endpoint: srv.Endpoint, Insecure: true, PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: "us-east-1",
		PartSize: MinPartSize,
	}
}

func open(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func leftovers(t *testing.T, s blob.Store) int {
	t.Helper()
	n, err := s.(*Store).Staged(context.Background())
	if err != nil {
		t.Fatalf("counting staged uploads: %v", err)
	}
	return n
}

func TestContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Options)
	}{
		{"Plain", func(*Options) {}},
		{"PrefixedShared", func(o *Options) { o.Prefix = "mesh/dc1"; o.Shared = true; o.Node = "n1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blobtest.RunWith(t, func(t *testing.T) blob.Store {
				o := options(t)
				tc.mod(&o)
				return open(t, o)
			}, blobtest.Options{Leftovers: leftovers})
		})
	}
}

// The driver-independent object-store behaviour: shared buckets, sweeps,
// faults, probes.
func TestObjectStore(t *testing.T) {
	objblobtest.Run(t, objblobtest.Driver{
		Open: func(t *testing.T, o objblobtest.Setup) *objblob.Store {
			opts := options(t)
			if o.Like != nil {
				opts = o.Like.(Options)
			}
			opts.Node, opts.Shared, opts.AbandonAfter = o.Node, o.Shared, o.AbandonAfter
			opts.ListPageSize = o.PageSize
			if o.Proxy != "" {
				// Through the fault proxy, with retries quick enough
				// for a test and a client the test can inspect.
				opts.Endpoint = o.Proxy
				opts.MaxAttempts = 3
				opts.ResponseTimeout = o.ResponseTimeout
				opts.HTTPClient = o.HTTPClient
			}
			s, err := Open(context.Background(), opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s.Store
		},
		Config: func(t *testing.T) any { return options(t) },
		Target: func(cfg any) string { return cfg.(Options).Endpoint },
	})
}

func TestOpenRefusesBadCredentialsClearly(t *testing.T) {
	o := options(t)
	o.SecretKey = "wrong-" + o.SecretKey
	_, err := Open(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "credentials refused") {
		t.Fatalf("Open with a wrong secret key: error = %v, want one saying the credentials were refused", err)
	}
	if strings.Contains(err.Error(), o.SecretKey) {
		t.Errorf("the error quotes the secret key: %v", err)
	}
}

func TestOpenRefusesMissingBucketClearly(t *testing.T) {
	o := options(t)
	o.Bucket = objtest.Name()
	_, err := Open(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), o.Bucket) {
		t.Fatalf("Open of a missing bucket: error = %v, want one naming the bucket", err)
	}
}

func TestOpenRefusesPlainHTTPUnlessInsecure(t *testing.T) {
	o := options(t)
	o.Insecure = false
	_, err := Open(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Fatalf("Open of an http:// endpoint with secure on: error = %v, want a refusal", err)
	}
}

func TestPresignedURLReadsTheBlob(t *testing.T) {
	s := open(t, options(t))
	ctx := context.Background()
	b := []byte("presigned patch bytes")
	d := blob.FromBytes(b)
	if _, err := blob.Put(ctx, s, d, strings.NewReader(string(b))); err != nil {
		t.Fatal(err)
	}
	u, err := s.PresignGet(ctx, d, 60e9)
	if err != nil {
		t.Fatalf("PresignGet: %v", err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET presigned URL: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(got) != string(b) {
		t.Fatalf("presigned GET = %d %q, %v; want 200 with the blob", resp.StatusCode, got, err)
	}
	bad := strings.Replace(u, "X-Amz-Signature=", "X-Amz-Signature=00", 1)
	resp2, err := http.Get(bad)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusForbidden {
		t.Errorf("GET with a tampered signature = %d, want 403", resp2.StatusCode)
	}
}

func BenchmarkPut(b *testing.B)  { blobtest.BenchPut(b, open(b, options(b)), 32<<20) }
func BenchmarkRead(b *testing.B) { blobtest.BenchRead(b, open(b, options(b)), 32<<20) }
