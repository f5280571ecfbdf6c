// Package swiftblob is the OpenStack Swift blob driver, built on
// blob/objblob with github.com/ncw/swift/v2.
//
// An upload streams (chunked, never buffered whole) into a staging object
// under staging/; Commit copies it on the server to the blob's key and
// deletes the staging object. A Swift PUT becomes visible only when it
// completes, and a server-side COPY only when it has copied everything, so
// no partial object is ever visible under a digest. A node that crashes
// before the copy leaves a staging object, swept after AbandonAfter. One
// object is at most Swift's max_file_size (5 GiB by default), well above
// the largest patch.
//
// Authentication is auth v1 (tempauth, swauth) or Keystone v3 with a user
// and password or an application credential; the token is renewed on a
// 401. Requests that read or delete are retried on 5xx answers and broken
// connections with a bounded, jittered backoff.
//
// The package owns talking to Swift; layout, staging and shared-container
// claims are objblob's.
package swiftblob

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ncw/swift/v2"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/objblob"
)

// Options configures the driver. AuthURL, the credentials and Container
// are required.
type Options struct {
	// AuthURL is the identity endpoint: .../auth/v1.0 for auth v1,
	// .../v3 for Keystone.
	AuthURL string
	// AuthVersion is 1 or 3; 0 guesses from AuthURL.
	AuthVersion int
	// User and Key log in (v1: "account:user" and its key; v3: the user
	// name and password, with Domain and Project).
	User    string
	Key     string
	Domain  string
	Project string
	// ProjectDomain is the project's domain, when it differs from Domain.
	ProjectDomain string
	// ApplicationCredentialID and ApplicationCredentialSecret log in
	// with a Keystone v3 application credential instead of a user.
	ApplicationCredentialID     string
	ApplicationCredentialSecret string
	// Region picks the object-store endpoint from the v3 catalog.
	Region    string
	Container string
	// Prefix is prepended to every object name (see objblob).
	Prefix string
	// CAFile is a PEM bundle trusted besides the system roots.
	CAFile string
	// TempURLKey is the account's X-Account-Meta-Temp-URL-Key, needed
	// only to hand out temp URLs (TempURL).
	TempURLKey string
	// MaxAttempts bounds tries of a reading or deleting request. Default 4.
	MaxAttempts int
	// ResponseTimeout bounds the wait for an answer's headers. Default 30s.
	ResponseTimeout time.Duration
	// Objblob options: shared mode, node name, sweep age, log.
	Node         string
	Shared       bool
	AbandonAfter time.Duration
	Log          *slog.Logger
	// HTTPClient's transport replaces the default (tests go through a
	// fault-injecting proxy).
	HTTPClient *http.Client
	// ListPageSize is how many names one listing request asks for.
	// Default 1000.
	ListPageSize int
}

// Store is an objblob.Store on a Swift container, with temp URLs.
type Store struct {
	*objblob.Store
	b *bucket
}

// Open logs in, checks that the container exists and sweeps abandoned
// uploads: wrong credentials or a missing container fail here, at start.
func Open(ctx context.Context, o Options) (*Store, error) {
	b, err := newBucket(o)
	if err != nil {
		return nil, err
	}
	if err := b.c.Authenticate(ctx); err != nil {
		return nil, fmt.Errorf("swiftblob: log in at %s as %q: %w", o.AuthURL, b.who(), explain(err))
	}
	if _, _, err := b.c.Container(ctx, o.Container); err != nil {
		return nil, fmt.Errorf("swiftblob: container %q: %w", o.Container, explain(err))
	}
	s, err := objblob.New(ctx, b, objblob.Options{
		Prefix: o.Prefix, Node: o.Node, Shared: o.Shared, AbandonAfter: o.AbandonAfter, Log: o.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("swiftblob: container %q: %w", o.Container, err)
	}
	return &Store{Store: s, b: b}, nil
}

// Conn returns the Swift connection, for tests and tools.
func (s *Store) Conn() *swift.Connection { return s.b.c }

// TempURL returns a URL that reads d directly from Swift until ttl passes.
func (s *Store) TempURL(ctx context.Context, d blob.Digest, ttl time.Duration) (string, error) {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return "", err
	}
	if s.b.tempURLKey == "" {
		return "", errors.New("swiftblob: no temp URL key configured")
	}
	if _, err := s.b.c.GetStorageUrl(ctx); err != nil {
		return "", fmt.Errorf("swiftblob: temp URL: %w", err)
	}
	return s.b.c.ObjectTempUrl(s.b.container, s.Prefix()+"blobs/sha256/"+d.Hex(), s.b.tempURLKey, http.MethodGet, time.Now().Add(ttl)), nil
}

// PresignGet is TempURL under the name the api's redirect looks for.
func (s *Store) PresignGet(ctx context.Context, d blob.Digest, ttl time.Duration) (string, error) {
	return s.TempURL(ctx, d, ttl)
}

type bucket struct {
	c           *swift.Connection
	container   string
	tempURLKey  string
	maxAttempts int
	pageSize    int
}

func newBucket(o Options) (*bucket, error) {
	if o.AuthURL == "" || o.Container == "" {
		return nil, errors.New("swiftblob: auth URL and container are required")
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 4
	}
	if o.ResponseTimeout == 0 {
		o.ResponseTimeout = 30 * time.Second
	}
	if o.AuthVersion == 0 {
		o.AuthVersion = 1
		if strings.Contains(o.AuthURL, "/v3") {
			o.AuthVersion = 3
		}
	}
	var rt http.RoundTripper
	if o.HTTPClient != nil {
		rt = o.HTTPClient.Transport
	} else {
		tr := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: o.ResponseTimeout,
			TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("swiftblob: CA bundle: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("swiftblob: CA bundle %s holds no PEM certificate", o.CAFile)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		rt = tr
	}
	c := &swift.Connection{
		AuthUrl:                     o.AuthURL,
		AuthVersion:                 o.AuthVersion,
		UserName:                    o.User,
		ApiKey:                      o.Key,
		Domain:                      o.Domain,
		Tenant:                      o.Project,
		TenantDomain:                o.ProjectDomain,
		ApplicationCredentialId:     o.ApplicationCredentialID,
		ApplicationCredentialSecret: o.ApplicationCredentialSecret,
		Region:                      o.Region,
		Transport:                   rt,
		ConnectTimeout:              o.ResponseTimeout,
		Timeout:                     2 * o.ResponseTimeout,
		UserAgent:                   "patchmesh",
	}
	if o.ListPageSize <= 0 || o.ListPageSize > 10000 {
		o.ListPageSize = 1000
	}
	return &bucket{c: c, container: o.Container, tempURLKey: o.TempURLKey, maxAttempts: o.MaxAttempts, pageSize: o.ListPageSize}, nil
}

func (b *bucket) who() string {
	if b.c.ApplicationCredentialId != "" {
		return "application credential " + b.c.ApplicationCredentialId
	}
	return b.c.UserName
}

// explain maps Swift's errors to the ones callers branch on.
func explain(err error) error {
	if err == nil {
		return nil
	}
	var se *swift.Error
	if errors.As(err, &se) {
		switch se.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", blob.ErrNotFound, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("credentials refused (check the user and key): %w", err)
		case http.StatusRequestedRangeNotSatisfiable:
			return fmt.Errorf("%w: %w", objblob.ErrRange, err)
		}
	}
	return err
}

// transient says a failed request may succeed if tried again.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *swift.Error
	if errors.As(err, &se) {
		return se.StatusCode >= 500 || se.StatusCode == http.StatusRequestTimeout || se.StatusCode == http.StatusTooManyRequests
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF)
}

// retry runs an idempotent request up to maxAttempts times, backing off
// 100ms, 200ms, 400ms… (jittered, at most 2s) between tries.
func (b *bucket) retry(ctx context.Context, fn func() error) error {
	var err error
	for attempt := range b.maxAttempts {
		if attempt > 0 {
			d := min(100*time.Millisecond<<(attempt-1), 2*time.Second)
			d = d/2 + rand.N(d/2+1)
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(d):
			}
		}
		if err = fn(); !transient(err) {
			return explain(err)
		}
	}
	return fmt.Errorf("after %d tries: %w", b.maxAttempts, explain(err))
}

func (b *bucket) Get(ctx context.Context, key string, rng string) (io.ReadCloser, objblob.ObjectInfo, error) {
	var h swift.Headers
	if rng != "" {
		h = swift.Headers{"Range": rng}
	}
	var (
		f   *swift.ObjectOpenFile
		hdr swift.Headers
	)
	err := b.retry(ctx, func() (err error) {
		f, hdr, err = b.c.ObjectOpen(ctx, b.container, key, false, h)
		return err
	})
	if err != nil {
		return nil, objblob.ObjectInfo{}, err
	}
	oi := objblob.ObjectInfo{Key: key}
	oi.Size, _ = strconv.ParseInt(hdr["Content-Length"], 10, 64)
	oi.Length = oi.Size
	if cr := hdr["Content-Range"]; cr != "" {
		if err := objblob.ParseContentRange(cr, &oi); err != nil {
			f.Close()
			return nil, objblob.ObjectInfo{}, fmt.Errorf("swiftblob: get %s: %w", key, err)
		}
	}
	oi.Modified, _ = http.ParseTime(hdr["Last-Modified"])
	return f, oi, nil
}

func (b *bucket) Head(ctx context.Context, key string) (objblob.ObjectInfo, error) {
	var o swift.Object
	err := b.retry(ctx, func() (err error) {
		o, _, err = b.c.Object(ctx, b.container, key)
		return err
	})
	if err != nil {
		return objblob.ObjectInfo{}, err
	}
	return objblob.ObjectInfo{Key: key, Size: o.Bytes, Modified: o.LastModified}, nil
}

// Put stores a small object; a whole PUT of the same bytes is idempotent,
// so it is retried like a read.
func (b *bucket) Put(ctx context.Context, key string, p []byte) error {
	return b.retry(ctx, func() error { return b.c.ObjectPutBytes(ctx, b.container, key, p, "application/octet-stream") })
}

func (b *bucket) Copy(ctx context.Context, src, dst string) error {
	return b.retry(ctx, func() error {
		_, err := b.c.ObjectCopy(ctx, b.container, src, b.container, dst, nil)
		return err
	})
}

func (b *bucket) Delete(ctx context.Context, key string) error {
	err := b.retry(ctx, func() error { return b.c.ObjectDelete(ctx, b.container, key) })
	if errors.Is(err, blob.ErrNotFound) {
		return nil
	}
	return err
}

func (b *bucket) List(ctx context.Context, prefix string, fn func(objblob.ObjectInfo) error) error {
	opts := &swift.ObjectsOpts{Prefix: prefix, Limit: b.pageSize}
	// A bound on pages, in case a broken server repeats its marker.
	for page := 0; page < 1_000_000; page++ {
		var objs []swift.Object
		err := b.retry(ctx, func() (err error) {
			objs, err = b.c.Objects(ctx, b.container, opts)
			return err
		})
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := fn(objblob.ObjectInfo{Key: o.Name, Size: o.Bytes, Modified: o.LastModified}); err != nil {
				return err
			}
		}
		if len(objs) < opts.Limit {
			return nil
		}
		opts.Marker = objs[len(objs)-1].Name
	}
	return errors.New("swiftblob: listing does not end")
}

// Discard deletes an abandoned staging object.
func (b *bucket) Discard(ctx context.Context, staging string) error { return b.Delete(ctx, staging) }

func (b *bucket) Upload(ctx context.Context, key, staging string) (objblob.Upload, error) {
	f, err := b.c.ObjectCreate(ctx, b.container, staging, false, "", "application/octet-stream", nil)
	if err != nil {
		return nil, explain(err)
	}
	return &upload{b: b, f: f, key: key, staging: staging}, nil
}

type upload struct {
	b       *bucket
	f       *swift.ObjectCreateFile
	key     string
	staging string
	closed  bool
}

func (u *upload) Write(p []byte) (int, error) {
	n, err := u.f.Write(p)
	if err != nil {
		return n, fmt.Errorf("swiftblob: upload: %w", explain(err))
	}
	return n, nil
}

// Complete finishes the staging PUT, then copies it into place.
func (u *upload) Complete(ctx context.Context) error {
	u.closed = true
	if err := u.f.Close(); err != nil {
		return fmt.Errorf("swiftblob: finish upload: %w", explain(err))
	}
	if err := u.b.Copy(ctx, u.staging, u.key); err != nil {
		return errors.Join(fmt.Errorf("swiftblob: copy into place: %w", err), u.b.Delete(ctx, u.staging))
	}
	// The blob is in place; a staging object left behind is swept later.
	_ = u.b.Delete(ctx, u.staging)
	return nil
}

var errAborted = errors.New("swiftblob: upload aborted")

func (u *upload) Abort(ctx context.Context) error {
	if !u.closed {
		u.closed = true
		// Cutting the chunked PUT short makes Swift drop it.
		u.f.CloseWithError(errAborted)
	}
	return u.b.Delete(ctx, u.staging)
}
