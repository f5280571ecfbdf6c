// Package s3blob is the S3 blob driver (AWS S3 and S3-compatible stores
// such as MinIO or Ceph RGW), built on blob/objblob with
// github.com/aws/aws-sdk-go-v2.
//
// An upload is buffered one part at a time (Options.PartSize, 8 MiB by
// default): a blob smaller than one part becomes one PutObject at Commit, a
// larger one a multipart upload sent straight to the blob's key, which S3
// makes visible only at CompleteMultipartUpload. Either step is atomic, so
// no partial object is ever visible under a digest. A multipart upload is
// named by a marker under staging/ while it is open, so that a sweep can
// abort the uploads of a node that crashed (S3-compatible stores do not all
// list multipart uploads by prefix). A bucket lifecycle rule aborting
// incomplete multipart uploads after a day is still good hygiene: a crash
// between creating an upload and writing its marker leaves one with no
// parts.
//
// The package owns talking to S3: credentials, TLS, retries, error mapping,
// presigned URLs. Layout, staging and shared-bucket claims are objblob's.
package s3blob

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/objblob"
)

// Options configures the driver. Bucket is required.
type Options struct {
	Bucket string
	// Prefix is prepended to every key (see objblob).
	Prefix string
	// Region is the bucket's region. Default: the SDK's (AWS_REGION, the
	// shared config), else us-east-1, which S3-compatible stores accept.
	Region string
	// Endpoint is the base URL of an S3-compatible store, e.g.
	// https://minio.dc1.example:9000. Empty: AWS itself.
	Endpoint string
	// PathStyle addresses the bucket in the path (endpoint/bucket/key)
	// rather than the host name, as most S3-compatible stores want.
	PathStyle bool
	// Insecure allows a plain http:// endpoint. Off by default: keys and
	// blobs then only travel over TLS.
	Insecure bool
	// AccessKey and SecretKey are static credentials. Empty: the SDK's
	// default chain (AWS_ACCESS_KEY_ID…, shared files, an instance or
	// container role). SessionToken goes with temporary keys.
	AccessKey    string
	SecretKey    string
	SessionToken string
	// CAFile is a PEM bundle trusted besides the system roots, for a store
	// with a private CA.
	CAFile string
	// PartSize is the multipart part size and so about the memory one
	// upload holds. Default 8 MiB; at least 5 MiB (S3's minimum).
	PartSize int
	// MaxAttempts bounds tries per request (with jittered backoff) on
	// throttling, 5xx answers and broken connections. Default 4.
	MaxAttempts int
	// ResponseTimeout bounds the wait for an answer's headers, so a store
	// that stops answering fails a request rather than hanging it.
	// Default 30s.
	ResponseTimeout time.Duration
	// Objblob options: shared mode, node name, sweep age, log.
	Node         string
	Shared       bool
	AbandonAfter time.Duration
	Log          *slog.Logger
	// HTTPClient replaces the SDK's client (tests point it through a
	// fault-injecting proxy).
	HTTPClient *http.Client
	// ListPageSize is how many keys one listing request asks for.
	// Default 1000, S3's most.
	ListPageSize int
}

const (
	// DefaultPartSize is Options.PartSize's default.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part but the last.
	MinPartSize = 5 << 20
)

// Store is an objblob.Store on an S3 bucket, with presigned URLs.
type Store struct {
	*objblob.Store
	b *bucket
}

// Open connects to the bucket, checks that it exists and that the
// credentials work (a clear error at start rather than at the first
// upload), and sweeps abandoned uploads.
func Open(ctx context.Context, o Options) (*Store, error) {
	b, err := newBucket(ctx, o)
	if err != nil {
		return nil, err
	}
	if _, err := b.c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &o.Bucket}); err != nil {
		return nil, fmt.Errorf("s3blob: bucket %q%s: %w", o.Bucket, b.where(), explain(err))
	}
	s, err := objblob.New(ctx, b, objblob.Options{
		Prefix: o.Prefix, Node: o.Node, Shared: o.Shared, AbandonAfter: o.AbandonAfter, Log: o.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("s3blob: bucket %q%s: %w", o.Bucket, b.where(), explain(err))
	}
	return &Store{Store: s, b: b}, nil
}

// Client returns the S3 client, for tests and tools.
func (s *Store) Client() *s3.Client { return s.b.c }

// PresignGet returns a URL that reads d directly from the bucket until ttl
// passes, so that a node can redirect a download instead of relaying it.
func (s *Store) PresignGet(ctx context.Context, d blob.Digest, ttl time.Duration) (string, error) {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return "", err
	}
	key := s.b.prefix + "blobs/sha256/" + d.Hex()
	req, err := s3.NewPresignClient(s.b.c).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.b.name, Key: &key},
		s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("s3blob: presign %s: %w", d, err)
	}
	return req.URL, nil
}

type bucket struct {
	c        *s3.Client
	name     string
	prefix   string
	endpoint string
	partSize int
	pageSize int32
	// parts holds part-sized buffers of ended uploads for the next ones.
	parts *sync.Pool
}

func newBucket(ctx context.Context, o Options) (*bucket, error) {
	if o.Bucket == "" {
		return nil, errors.New("s3blob: no bucket")
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3blob: part size %d below S3's minimum %d", o.PartSize, MinPartSize)
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 4
	}
	if o.ResponseTimeout == 0 {
		o.ResponseTimeout = 30 * time.Second
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3blob: endpoint must be an http(s) URL such as https://s3.dc1.example:9000, got %q", o.Endpoint)
		}
		if u.Scheme == "http" && !o.Insecure {
			return nil, fmt.Errorf("s3blob: endpoint %s is plain http; set insecure (s3 secure off) to allow it", o.Endpoint)
		}
	}
	var loadOpts []func(*config.LoadOptions) error
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	if o.AccessKey != "" || o.SecretKey != "" {
		if o.AccessKey == "" || o.SecretKey == "" {
			return nil, errors.New("s3blob: access key and secret key must be set together")
		}
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKey, o.SecretKey, o.SessionToken)))
	}
	{
		var pool *x509.CertPool
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("s3blob: CA bundle: %w", err)
			}
			if pool, err = x509.SystemCertPool(); err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("s3blob: CA bundle %s holds no PEM certificate", o.CAFile)
			}
		}
		hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{}
			}
			tr.TLSClientConfig.MinVersion = tls.VersionTLS12
			if pool != nil {
				tr.TLSClientConfig.RootCAs = pool
			}
			tr.MaxIdleConnsPerHost = 64
		}).WithDialerOptions(func(d *net.Dialer) { d.Timeout = 10 * time.Second })
		loadOpts = append(loadOpts, config.WithHTTPClient(hc))
	}
	loadOpts = append(loadOpts,
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = o.MaxAttempts
				so.MaxBackoff = 5 * time.Second
			})
		}))
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("s3blob: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	c := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		var hc config.HTTPClient = o.HTTPClient
		if o.HTTPClient == nil {
			hc = cfg.HTTPClient
		}
		// A given client is set here rather than in the loaded config,
		// where the SDK would want to add AWS_CA_BUNDLE to it.
		so.HTTPClient = headerTimeout{c: hc, d: o.ResponseTimeout}
		// Checksums only where S3 requires them: S3-compatible stores
		// do not all accept the SDK's newer trailing checksums, and the
		// digest is checked end to end by blob.Put anyway.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	prefix := o.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if o.ListPageSize <= 0 || o.ListPageSize > 1000 {
		o.ListPageSize = 1000
	}
	return &bucket{c: c, name: o.Bucket, prefix: prefix, endpoint: o.Endpoint, partSize: o.PartSize, pageSize: int32(o.ListPageSize),
		parts: &sync.Pool{New: func() any { return make([]byte, 0, o.PartSize) }}}, nil
}

// headerTimeout fails a request whose answer's headers take longer than d,
// so that a store that stops answering fails the request (which the
// retryer may try again) instead of hanging it. The body, once it comes,
// may take as long as it needs.
type headerTimeout struct {
	c config.HTTPClient
	d time.Duration
}

func (h headerTimeout) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	// The clock starts once the request is written: sending a part may
	// take longer than the wait for the answer should.
	t := time.AfterFunc(time.Duration(math.MaxInt64), func() { cancel(fmt.Errorf("s3blob: no answer within %s", h.d)) })
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { t.Reset(h.d) },
	})
	resp, err := h.c.Do(req.WithContext(ctx))
	if !t.Stop() && err != nil {
		err = fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func (b *bucket) where() string {
	if b.endpoint == "" {
		return ""
	}
	return " at " + b.endpoint
}

// explain maps what S3 answers to errors callers branch on, and says what
// an operator should check for the usual start-up failures.
func explain(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchUpload":
			return fmt.Errorf("%w (%s)", blob.ErrNotFound, ae.ErrorCode())
		case "NoSuchBucket":
			return fmt.Errorf("the bucket does not exist: %w", err)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "InvalidToken", "ExpiredToken":
			return fmt.Errorf("credentials refused (check the access and secret key): %w", err)
		case "InvalidRange":
			return fmt.Errorf("%w: %w", objblob.ErrRange, err)
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", blob.ErrNotFound, err)
		case http.StatusForbidden:
			return fmt.Errorf("credentials refused or no access (check the access and secret key and the bucket policy): %w", err)
		case http.StatusRequestedRangeNotSatisfiable:
			return fmt.Errorf("%w: %w", objblob.ErrRange, err)
		}
	}
	return err
}

func (b *bucket) Get(ctx context.Context, key string, rng string) (io.ReadCloser, objblob.ObjectInfo, error) {
	in := &s3.GetObjectInput{Bucket: &b.name, Key: &key}
	if rng != "" {
		in.Range = &rng
	}
	out, err := b.c.GetObject(ctx, in)
	if err != nil {
		return nil, objblob.ObjectInfo{}, explain(err)
	}
	n := aws.ToInt64(out.ContentLength)
	oi := objblob.ObjectInfo{Key: key, Size: n, Length: n, Modified: aws.ToTime(out.LastModified)}
	if out.ContentRange != nil {
		if err := objblob.ParseContentRange(*out.ContentRange, &oi); err != nil {
			out.Body.Close()
			return nil, objblob.ObjectInfo{}, fmt.Errorf("s3blob: get %s: %w", key, err)
		}
	}
	return out.Body, oi, nil
}

func (b *bucket) Head(ctx context.Context, key string) (objblob.ObjectInfo, error) {
	out, err := b.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return objblob.ObjectInfo{}, explain(err)
	}
	return objblob.ObjectInfo{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified)}, nil
}

func (b *bucket) Put(ctx context.Context, key string, p []byte) error {
	_, err := b.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &b.name, Key: &key, Body: bytes.NewReader(p),
		ContentLength: aws.Int64(int64(len(p)))})
	return explain(err)
}

func (b *bucket) Copy(ctx context.Context, src, dst string) error {
	_, err := b.c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &b.name, Key: &dst,
		CopySource: aws.String(url.PathEscape(b.name) + "/" + escapeKey(src))})
	return explain(err)
}

// escapeKey escapes each path segment of a key for CopySource.
func escapeKey(k string) string {
	parts := strings.Split(k, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func (b *bucket) Delete(ctx context.Context, key string) error {
	_, err := b.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.name, Key: &key})
	if err = explain(err); errors.Is(err, blob.ErrNotFound) {
		return nil
	}
	return err
}

func (b *bucket) List(ctx context.Context, prefix string, fn func(objblob.ObjectInfo) error) error {
	p := s3.NewListObjectsV2Paginator(b.c, &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: &prefix, MaxKeys: &b.pageSize})
	// A bound on pages, in case a broken store repeats its continuation
	// token: a billion keys at 1000 a page.
	for page := 0; p.HasMorePages(); page++ {
		if page > 1_000_000 {
			return errors.New("s3blob: listing does not end")
		}
		out, err := p.NextPage(ctx)
		if err != nil {
			return explain(err)
		}
		for _, o := range out.Contents {
			err := fn(objblob.ObjectInfo{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Discard aborts the multipart upload a staging marker names, then removes
// the marker.
func (b *bucket) Discard(ctx context.Context, staging string) error {
	body, _, err := b.Get(ctx, staging, "")
	if errors.Is(err, blob.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	m, err := io.ReadAll(io.LimitReader(body, 4096))
	body.Close()
	if err != nil {
		return err
	}
	if key, id, ok := strings.Cut(string(m), "\n"); ok {
		_, err := b.c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.name, Key: &key, UploadId: &id})
		if err := explain(err); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return err
		}
	}
	return b.Delete(ctx, staging)
}

func (b *bucket) Upload(ctx context.Context, key, staging string) (objblob.Upload, error) {
	return &upload{ctx: ctx, b: b, key: key, staging: staging}, nil
}

// upload holds one part in memory at a time.
type upload struct {
	ctx     context.Context
	b       *bucket
	key     string
	staging string
	buf     []byte
	id      string // multipart upload id, once one is needed
	parts   []types.CompletedPart
	pooled  bool // buf came from the bucket's pool
}

func (u *upload) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if len(u.buf)+len(p) > cap(u.buf) {
			u.grow(len(u.buf) + len(p))
		}
		room := u.b.partSize - len(u.buf)
		c := min(room, len(p))
		u.buf = append(u.buf, p[:c]...)
		p = p[c:]
		n += c
		if len(u.buf) == u.b.partSize {
			if err := u.flush(u.ctx); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// grow makes room for need bytes, at most one part. A small blob gets a
// buffer of its size; past smallUpload an upload takes a whole part's
// buffer from the bucket's pool, which uploads hand back when they end, so
// that uploads do not each allocate (and leave as garbage) a part's worth
// of memory.
func (u *upload) grow(need int) {
	var grown []byte
	if need > smallUpload {
		grown = u.b.parts.Get().([]byte)[:len(u.buf)]
		u.pooled = true
	} else {
		grown = make([]byte, len(u.buf), min(smallUpload, max(need, 2*cap(u.buf), 32<<10)))
	}
	copy(grown, u.buf)
	u.buf = grown
}

// smallUpload is the most an upload buffers in memory of its own.
const smallUpload = 256 << 10

// release hands a pooled part buffer back.
func (u *upload) release() {
	if u.pooled {
		u.b.parts.Put(u.buf[:0])
	}
	u.buf, u.pooled = nil, false
}

// flush sends the buffer as the next part, starting the multipart upload
// (and its staging marker) with the first.
func (u *upload) flush(ctx context.Context) error {
	if u.id == "" {
		out, err := u.b.c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &u.b.name, Key: &u.key})
		if err != nil {
			return fmt.Errorf("s3blob: start upload: %w", explain(err))
		}
		u.id = aws.ToString(out.UploadId)
		if err := u.b.Put(ctx, u.staging, []byte(u.key+"\n"+u.id)); err != nil {
			return fmt.Errorf("s3blob: staging marker: %w", err)
		}
	}
	num := int32(len(u.parts) + 1)
	out, err := u.b.c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &u.b.name, Key: &u.key, UploadId: &u.id,
		PartNumber: &num, Body: bytes.NewReader(u.buf), ContentLength: aws.Int64(int64(len(u.buf)))})
	if err != nil {
		return fmt.Errorf("s3blob: upload part %d: %w", num, explain(err))
	}
	u.parts = append(u.parts, types.CompletedPart{ETag: out.ETag, PartNumber: &num})
	u.buf = u.buf[:0]
	return nil
}

func (u *upload) Complete(ctx context.Context) error {
	defer u.release()
	if u.id == "" {
		// Smaller than a part: one PutObject, atomic on its own.
		return u.b.Put(ctx, u.key, u.buf)
	}
	if len(u.buf) > 0 {
		if err := u.flush(ctx); err != nil {
			return err
		}
	}
	_, err := u.b.c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &u.b.name, Key: &u.key,
		UploadId: &u.id, MultipartUpload: &types.CompletedMultipartUpload{Parts: u.parts}})
	if err != nil {
		return fmt.Errorf("s3blob: complete upload: %w", explain(err))
	}
	// The blob is in place; a marker left behind only costs the sweep an
	// abort of an upload that no longer exists, so its error is no failure.
	_ = u.b.Delete(ctx, u.staging)
	return nil
}

func (u *upload) Abort(ctx context.Context) error {
	u.release()
	if u.id == "" {
		return nil
	}
	_, err := u.b.c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &u.b.name, Key: &u.key, UploadId: &u.id})
	if err := explain(err); err != nil && !errors.Is(err, blob.ErrNotFound) {
		return err
	}
	return u.b.Delete(ctx, u.staging)
}
