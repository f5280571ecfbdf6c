package swiftblob

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/blobtest"
	"github.com/patchmesh/patchmesh/blob/objblob"
	"github.com/patchmesh/patchmesh/blob/objblob/objblobtest"
	"github.com/patchmesh/patchmesh/internal/objtest"
)

// options returns driver options for a fresh container on the test Swift.
func options(t testing.TB) Options {
	srv := objtest.SwiftServer(t)
	return Options{AuthURL: srv.AuthURL, User: srv.User, Key: srv.Key, Container: srv.Container(t)}
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
				// Log in through the proxy too: tempauth then hands out
				// a storage URL on the proxy.
				u, _ := url.Parse(opts.AuthURL)
				opts.AuthURL = o.Proxy + u.Path
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
		Target: func(cfg any) string {
			u, _ := url.Parse(cfg.(Options).AuthURL)
			return u.Scheme + "://" + u.Host
		},
	})
}

func TestOpenRefusesBadCredentialsClearly(t *testing.T) {
	o := options(t)
	o.Key = "wrong-key"
	_, err := Open(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "credentials refused") {
		t.Fatalf("Open with a wrong key: error = %v, want one saying the credentials were refused", err)
	}
	if strings.Contains(err.Error(), o.Key) {
		t.Errorf("the error quotes the key: %v", err)
	}
}

func TestOpenRefusesMissingContainerClearly(t *testing.T) {
	o := options(t)
	o.Container = objtest.Name()
	_, err := Open(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), o.Container) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Open of a missing container: error = %v, want one naming it as not found", err)
	}
}

func TestTempURLReadsTheBlob(t *testing.T) {
	ctx := context.Background()
	o := options(t)
	o.TempURLKey = "temp-url-key-" + objtest.Name()
	s := open(t, o)
	if err := s.Conn().AccountUpdate(ctx, swift.Headers{"X-Account-Meta-Temp-Url-Key": o.TempURLKey}); err != nil {
		t.Fatal(err)
	}
	b := []byte("temp url patch bytes")
	d := blob.FromBytes(b)
	if _, err := blob.Put(ctx, s, d, strings.NewReader(string(b))); err != nil {
		t.Fatal(err)
	}
	u, err := s.TempURL(ctx, d, time.Minute)
	if err != nil {
		t.Fatalf("TempURL: %v", err)
	}
	for _, tc := range []struct {
		url  string
		want int
	}{
		{u, http.StatusOK},
		{strings.Replace(u, "temp_url_sig=", "temp_url_sig=0", 1), http.StatusUnauthorized},
	} {
		resp, err := http.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || (tc.want == 200 && string(got) != string(b)) {
			t.Errorf("GET %s = %d %q, want %d", tc.url, resp.StatusCode, got, tc.want)
		}
	}
}

func BenchmarkPut(b *testing.B)  { blobtest.BenchPut(b, open(b, options(b)), 32<<20) }
func BenchmarkRead(b *testing.B) { blobtest.BenchRead(b, open(b, options(b)), 32<<20) }
