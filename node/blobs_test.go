package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/internal/objtest"
)

func TestValidateBlobs(t *testing.T) {
	s3 := func(c *Config) {
		c.Blobs.Driver = DriverS3
		c.Blobs.S3Bucket = "patches"
	}
	swift := func(c *Config) {
		c.Blobs.Driver = DriverSwift
		c.Blobs.SwiftAuthURL = "https://keystone.example:5000/v3"
		c.Blobs.SwiftContainer = "patches"
		c.Blobs.SwiftUser = "pm"
		c.Blobs.SwiftKey = "k"
	}
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		field string // "" means valid
	}{
		{"s3 minimal", s3, ""},
		{"s3 without bucket", func(c *Config) { s3(c); c.Blobs.S3Bucket = "" }, "blobs.s3_bucket"},
		{"s3 http endpoint with secure on", func(c *Config) { s3(c); c.Blobs.S3Endpoint = "http://minio:9000" }, "blobs.s3_endpoint"},
		{"s3 http endpoint with secure off", func(c *Config) { s3(c); c.Blobs.S3Endpoint = "http://minio:9000"; c.Blobs.S3Secure = false }, ""},
		{"s3 endpoint not a URL", func(c *Config) { s3(c); c.Blobs.S3Endpoint = "minio:9000" }, "blobs.s3_endpoint"},
		{"s3 access key without secret", func(c *Config) { s3(c); c.Blobs.S3AccessKey = "AK" }, "blobs.s3_access_key"},
		{"s3 secret twice", func(c *Config) {
			s3(c)
			c.Blobs.S3AccessKey, c.Blobs.S3SecretKey, c.Blobs.S3SecretKeyFile = "AK", "x", "/f"
		}, "blobs.s3_secret_key"},
		{"s3 part too small", func(c *Config) { s3(c); c.Blobs.S3PartSize = 1 << 20 }, "blobs.s3_part_size"},
		{"s3 shared and redirect", func(c *Config) { s3(c); c.Blobs.Shared = true; c.Blobs.Redirect = true }, ""},
		{"swift minimal", swift, ""},
		{"swift without container", func(c *Config) { swift(c); c.Blobs.SwiftContainer = "" }, "blobs.swift_container"},
		{"swift without credentials", func(c *Config) { swift(c); c.Blobs.SwiftKey = "" }, "blobs.swift_user"},
		{"swift with user and app credential", func(c *Config) {
			swift(c)
			c.Blobs.SwiftAppCredentialID, c.Blobs.SwiftAppCredentialSecret = "id", "s"
		}, "blobs.swift_user"},
		{"swift app credential", func(c *Config) {
			swift(c)
			c.Blobs.SwiftUser, c.Blobs.SwiftKey = "", ""
			c.Blobs.SwiftAppCredentialID, c.Blobs.SwiftAppCredentialSecretFile = "id", "/run/secret"
		}, ""},
		{"swift bad auth version", func(c *Config) { swift(c); c.Blobs.SwiftAuthVersion = 2 }, "blobs.swift_auth_version"},
		{"swift redirect without temp url key", func(c *Config) { swift(c); c.Blobs.Redirect = true }, "blobs.redirect"},
		{"shared on fs", func(c *Config) { c.Blobs.Shared = true }, "blobs.shared"},
		{"redirect on fs", func(c *Config) { c.Blobs.Redirect = true }, "blobs.redirect"},
		{"unknown driver", func(c *Config) { c.Blobs.Driver = "gcs" }, "blobs.driver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig(t)
			tc.mod(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("Validate: %v, want an error about %s", err, tc.field)
			}
			for _, secret := range []string{c.Blobs.S3SecretKey, c.Blobs.SwiftKey, c.Blobs.SwiftAppCredentialSecret} {
				if len(secret) > 1 && strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes a secret: %v", err)
				}
			}
		})
	}
}

// s3Config is a node on a fresh MinIO bucket, reached through proxy if
// given; the secret key comes from a file.
func s3Config(t *testing.T, endpoint string) (Config, objtest.S3) {
	srv := objtest.S3Server(t)
	c := testConfig(t)
	c.Blobs.Driver = DriverS3
	c.Blobs.S3Bucket = srv.Bucket(t)
	c.Blobs.S3Endpoint = srv.Endpoint
	if endpoint != "" {
		c.Blobs.S3Endpoint = endpoint
	}
	c.Blobs.S3Secure = false
	c.Blobs.S3PathStyle = true
	c.Blobs.S3Region = "us-east-1"
	c.Blobs.S3AccessKey = srv.AccessKey
	c.Blobs.S3SecretKeyFile = filepath.Join(t.TempDir(), "s3-secret")
	if err := os.WriteFile(c.Blobs.S3SecretKeyFile, []byte(srv.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func swiftConfig(t *testing.T) (Config, objtest.Swift) {
	srv := objtest.SwiftServer(t)
	c := testConfig(t)
	c.Blobs.Driver = DriverSwift
	c.Blobs.SwiftAuthURL = srv.AuthURL
	c.Blobs.SwiftUser = srv.User
	c.Blobs.SwiftKey = srv.Key
	c.Blobs.SwiftContainer = srv.Container(t)
	c.Blobs.SwiftPrefix = "patchmesh/"
	return c, srv
}

func TestNodeLifecycleObjectStores(t *testing.T) {
	t.Run("S3", func(t *testing.T) {
		cfg, srv := s3Config(t, "")
		first := testLifecycle(t, cfg)
		if strings.Contains(first.log.String(), srv.SecretKey) {
			t.Fatal("log: want the S3 secret key never logged, found it")
		}
		if !strings.Contains(first.log.String(), `"driver":"s3"`) {
			t.Errorf("log: want the blob driver logged as s3")
		}
	})
	t.Run("Swift", func(t *testing.T) {
		cfg, srv := swiftConfig(t)
		first := testLifecycle(t, cfg)
		if strings.Contains(first.log.String(), srv.Key) {
			t.Fatal("log: want the Swift key never logged, found it")
		}
	})
}

func TestNewRefusesBadObjectStoreCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    func(t *testing.T) Config
		secret string
	}{
		{"S3", func(t *testing.T) Config {
			c, _ := s3Config(t, "")
			c.Blobs.S3SecretKeyFile = ""
			c.Blobs.S3SecretKey = "not-the-secret-4a9c"
			return c
		}, "not-the-secret-4a9c"},
		{"Swift", func(t *testing.T) Config {
			c, _ := swiftConfig(t)
			c.Blobs.SwiftKey = "not-the-key-81d2"
			return c
		}, "not-the-key-81d2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log syncBuffer
			l, _ := NewLogger(LogConfig{Level: "debug", Format: "json"}, &log)
			_, err := New(context.Background(), tc.cfg(t), l, WithConsole(io.Discard))
			if err == nil || !strings.Contains(err.Error(), "credentials refused") {
				t.Fatalf("New with wrong credentials: %v, want a clear refusal at start", err)
			}
			if strings.Contains(err.Error(), tc.secret) || strings.Contains(log.String(), tc.secret) {
				t.Errorf("the secret appears in the error or the log")
			}
		})
	}
}

// upload puts a patch on the hub's edge tier and returns its digest and a
// machine token's Authorization header for the tier.
func uploadPatch(t *testing.T, r *running, mac string, content []byte) string {
	t.Helper()
	digest := blob.FromBytes(content).String()
	q := url.Values{"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.1"}}
	req, _ := http.NewRequest(http.MethodPost, r.url+"/v1/admin/patches?"+q.Encode(), bytes.NewReader(content))
	req.Header.Set("Authorization", "Macaroon "+mac)
	req.Header.Set("Content-Type", "application/octet-stream")
	getJSON(t, req, http.StatusCreated, nil)
	return digest
}

// Serving a download from S3 costs at most one request to the store, and
// the answer honours Range, If-None-Match and HEAD.
func TestObjectStoreDownloadsCostOneUpstreamRequest(t *testing.T) {
	srv := objtest.S3Server(t)
	p := objtest.NewProxy(t, srv.Endpoint)
	cfg, _ := s3Config(t, p.URL)
	r := startNode(t, cfg)
	mac := login(t, r.url, auth.BootstrapUser, bootstrapPassword(t, r.console.String()))
	content := bytes.Repeat([]byte("0123456789abcdef"), 1<<16+7) // 1 MiB + 112 bytes
	digest := uploadPatch(t, r, mac, content)
	etag := `"` + digest + `"`
	size := len(content)

	for _, tc := range []struct {
		name     string
		method   string
		header   map[string]string
		status   int
		body     []byte
		crange   string
		upstream int64
	}{
		{"whole", "GET", nil, 200, content, "", 1},
		{"range", "GET", map[string]string{"Range": "bytes=10-19"}, 206, content[10:20], fmt.Sprintf("bytes 10-19/%d", size), 1},
		{"open range", "GET", map[string]string{"Range": fmt.Sprintf("bytes=%d-", size-5)}, 206, content[size-5:], fmt.Sprintf("bytes %d-%d/%d", size-5, size-1, size), 1},
		{"suffix range", "GET", map[string]string{"Range": "bytes=-7"}, 206, content[size-7:], fmt.Sprintf("bytes %d-%d/%d", size-7, size-1, size), 1},
		{"multi range gets the whole", "GET", map[string]string{"Range": "bytes=0-1,5-6"}, 200, content, "", 1},
		{"if-range other etag gets the whole", "GET", map[string]string{"Range": "bytes=0-1", "If-Range": `"sha256:other"`}, 200, content, "", 1},
		{"if-range this etag", "GET", map[string]string{"Range": "bytes=0-1", "If-Range": etag}, 206, content[:2], fmt.Sprintf("bytes 0-1/%d", size), 1},
		{"not modified", "GET", map[string]string{"If-None-Match": `W/"x", ` + etag}, 304, nil, "", 0},
		{"unsatisfiable", "GET", map[string]string{"Range": fmt.Sprintf("bytes=%d-", size+10)}, 416, nil, "", 1},
		{"head", "HEAD", nil, 200, nil, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, r.url+"/v1/blobs/"+digest, nil)
			req.Header.Set("Authorization", "Macaroon "+mac)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			before := p.Requests()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("%s: status %d (%s), want %d", tc.name, resp.StatusCode, body, tc.status)
			}
			if tc.body != nil && !bytes.Equal(body, tc.body) {
				t.Errorf("body: %d bytes, want %d (the blob's bytes)", len(body), len(tc.body))
			}
			if got := resp.Header.Get("Content-Range"); got != tc.crange {
				t.Errorf("Content-Range = %q, want %q", got, tc.crange)
			}
			if tc.status < 300 && resp.Header.Get("ETag") != etag {
				t.Errorf("ETag = %q, want %q", resp.Header.Get("ETag"), etag)
			}
			if tc.method == "HEAD" && resp.ContentLength != int64(size) {
				t.Errorf("HEAD Content-Length = %d, want %d", resp.ContentLength, size)
			}
			if got := p.Requests() - before; got != tc.upstream {
				t.Errorf("the download made %d requests to the store, want %d", got, tc.upstream)
			}
		})
	}
}

// With blobs.redirect a download is a redirect to a presigned URL that
// reads the blob without the node's credentials.
func TestObjectStoreDownloadRedirect(t *testing.T) {
	cfg, _ := s3Config(t, "")
	cfg.Blobs.Redirect = true
	r := startNode(t, cfg)
	mac := login(t, r.url, auth.BootstrapUser, bootstrapPassword(t, r.console.String()))
	content := []byte("redirected patch bytes")
	digest := uploadPatch(t, r, mac, content)
	req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/blobs/"+digest, nil)
	req.Header.Set("Authorization", "Macaroon "+mac)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("download: %d to %q, want 307 to a presigned URL", resp.StatusCode, loc)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control of the redirect = %q, want no-store (the URL expires)", cc)
	}
	got, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != 200 || !bytes.Equal(b, content) {
		t.Fatalf("GET of the presigned URL: %d, %d bytes; want 200 with the blob", got.StatusCode, len(b))
	}
	// Without credentials there is still no redirect.
	anon, err := noFollow.Get(r.url + "/v1/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	anon.Body.Close()
	if anon.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous download: %d, want 401 before any redirect", anon.StatusCode)
	}
}

// /debug/status writes to the store: one that stops shows as down.
func TestStatusProbesObjectStore(t *testing.T) {
	srv := objtest.S3Server(t)
	p := objtest.NewProxy(t, srv.Endpoint)
	cfg, _ := s3Config(t, p.URL)
	r := startNode(t, cfg)
	status := func() int {
		resp, err := client.Get(r.url + "/debug/status")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("status of a healthy node: %d, want 200", got)
	}
	// Only probe objects count: the node's start-up sweep of abandoned
	// staging may still be listing the bucket beside these requests.
	before := p.RequestsFor("/probe/")
	if before == 0 {
		t.Fatal("the first status request wrote no probe object")
	}
	for range 5 {
		status()
	}
	if n := p.RequestsFor("/probe/") - before; n != 0 {
		t.Errorf("5 status requests right after a probe made %d probe requests, want 0 (rate-limited)", n)
	}
	p.Down()
	// The next probe is due after probeEvery.
	if !waitFor(func() bool { return status() == http.StatusServiceUnavailable }, 20*time.Second) {
		t.Fatal("status with the store down: want 503 within a probe interval")
	}
}

// Two nodes on one shared bucket: a patch file both record survives one
// node's removal of its patch, and goes with the second's.
func TestNodesSharingABucket(t *testing.T) {
	cfgA, srv := s3Config(t, "")
	cfgA.Node.Name = "node-a"
	cfgA.Blobs.Shared = true
	cfgA.Blobs.S3Prefix = "dc1/"
	cfgB := cfgA
	cfgB.Node.Name = "node-b"
	cfgB.Node.DataDir = t.TempDir()
	a, b := startNode(t, cfgA), startNode(t, cfgB)
	macA := login(t, a.url, auth.BootstrapUser, bootstrapPassword(t, a.console.String()))
	macB := login(t, b.url, auth.BootstrapUser, bootstrapPassword(t, b.console.String()))
	content := bytes.Repeat([]byte("shared patch "), 50000)
	digest := uploadPatch(t, a, macA, content)
	if got := uploadPatch(t, b, macB, content); got != digest {
		t.Fatal("digests differ")
	}
	download := func(r *running, mac string) int {
		req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/blobs/"+digest, nil)
		req.Header.Set("Authorization", "Macaroon "+mac)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && !bytes.Equal(body, content) {
			t.Fatalf("download from %s: %d bytes differ from the patch", r.url, len(body))
		}
		return resp.StatusCode
	}
	remove := func(r *running, mac string) {
		req, _ := http.NewRequest(http.MethodDelete, r.url+"/v1/admin/patches/"+digest, nil)
		req.Header.Set("Authorization", "Macaroon "+mac)
		getJSON(t, req, http.StatusNoContent, nil)
	}
	objects := func() []string {
		var keys []string
		c := srv.Client()
		out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &cfgA.Blobs.S3Bucket})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			keys = append(keys, *o.Key)
		}
		return keys
	}
	remove(a, macA)
	if got := download(b, macB); got != 200 {
		t.Fatalf("node b's download after node a removed its patch: %d, want 200", got)
	}
	remove(b, macB)
	if got := download(b, macB); got != 404 {
		t.Errorf("node b's download after both removed the patch: %d, want 404", got)
	}
	if keys := objects(); len(keys) != 0 {
		t.Errorf("objects left in the bucket after both nodes removed the patch: %v", keys)
	}
}

// An upload through a node whose object store stops mid-upload fails with
// an error answer, records nothing, leaves no blob, and succeeds when
// retried once the store is back.
func TestUploadWhenTheStoreStopsMidway(t *testing.T) {
	srv := objtest.S3Server(t)
	p := objtest.NewProxy(t, srv.Endpoint)
	cfg, _ := s3Config(t, p.URL)
	r := startNode(t, cfg)
	mac := login(t, r.url, auth.BootstrapUser, bootstrapPassword(t, r.console.String()))
	content := bytes.Repeat([]byte("a patch cut short "), 12<<20/18)
	digest := blob.FromBytes(content).String()
	q := url.Values{"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.1"}}
	post := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, r.url+"/v1/admin/patches?"+q.Encode(), bytes.NewReader(content))
		req.Header.Set("Authorization", "Macaroon "+mac)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	p.CutUpload(3 << 20)
	status, body := post()
	if status < 500 || !strings.Contains(body, `"error"`) {
		t.Fatalf("upload with the store stopping midway: %d %s, want a 5xx error envelope", status, body)
	}
	p.Up()
	req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/admin/patches/"+digest, nil)
	req.Header.Set("Authorization", "Macaroon "+mac)
	getJSON(t, req, http.StatusNotFound, nil)
	head, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &cfg.Blobs.S3Bucket,
		Key: aws.String("blobs/sha256/" + digest[len("sha256:"):])})
	if err == nil {
		t.Fatalf("a blob of %d bytes is visible after the failed upload", aws.ToInt64(head.ContentLength))
	}
	if status, body := post(); status != http.StatusCreated {
		t.Fatalf("retried upload: %d %s, want 201", status, body)
	}
	req, _ = http.NewRequest(http.MethodGet, r.url+"/v1/blobs/"+digest, nil)
	req.Header.Set("Authorization", "Macaroon "+mac)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, content) {
		t.Fatalf("download after the retry: %d, %d bytes; want 200 with the %d uploaded", resp.StatusCode, len(got), len(content))
	}
}
