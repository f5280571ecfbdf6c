package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/fsblob"
	"github.com/patchmesh/patchmesh/blob/pgblob"
	"github.com/patchmesh/patchmesh/blob/s3blob"
	"github.com/patchmesh/patchmesh/blob/swiftblob"
)

// validateBlobs checks the blobs section. Secrets are never echoed.
func (c Config) validateBlobs() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	b := c.Blobs
	oneOf := func(field, v, file string) {
		if v != "" && file != "" {
			bad(field, "set %s or %s_file, not both", field, field)
		}
	}
	objectStore := b.Driver == DriverS3 || b.Driver == DriverSwift
	switch b.Driver {
	case DriverFS:
	case DriverPostgres:
		if c.Store.Driver != DriverPostgres {
			bad("blobs.driver", "postgres keeps blobs in the store's database, so it needs store.driver postgres (store.driver is %q)", c.Store.Driver)
		}
		if b.ChunkSize < 4096 || b.ChunkSize > pgblob.MaxChunkSize {
			bad("blobs.chunk_size", "must be between 4096 and %d bytes, got %d", pgblob.MaxChunkSize, b.ChunkSize)
		}
	case DriverS3:
		if b.S3Bucket == "" {
			bad("blobs.s3_bucket", "is required when blobs.driver is s3")
		}
		if b.S3Endpoint != "" {
			u, err := url.Parse(b.S3Endpoint)
			switch {
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				bad("blobs.s3_endpoint", "must be an http(s) base URL such as https://minio.dc1.example:9000, got %q", b.S3Endpoint)
			case u.Scheme == "http" && b.S3Secure:
				bad("blobs.s3_endpoint", "is plain http while blobs.s3_secure is on; use https, or turn s3_secure off on a trusted network")
			}
		}
		if (b.S3AccessKey == "") != (b.S3SecretKey == "" && b.S3SecretKeyFile == "") {
			bad("blobs.s3_access_key", "set it together with s3_secret_key (or s3_secret_key_file), or neither to use the AWS SDK's default credentials")
		}
		oneOf("blobs.s3_secret_key", b.S3SecretKey, b.S3SecretKeyFile)
		if b.S3PartSize < s3blob.MinPartSize || b.S3PartSize > 1<<30 {
			bad("blobs.s3_part_size", "must be between %d and %d bytes, got %d", s3blob.MinPartSize, 1<<30, b.S3PartSize)
		}
	case DriverSwift:
		if u, err := url.Parse(b.SwiftAuthURL); b.SwiftAuthURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("blobs.swift_auth_url", "must be the identity endpoint's URL, e.g. https://keystone.dc1.example:5000/v3, when blobs.driver is swift")
		}
		if b.SwiftContainer == "" {
			bad("blobs.swift_container", "is required when blobs.driver is swift")
		}
		switch b.SwiftAuthVersion {
		case 0, 1, 3:
		default:
			bad("blobs.swift_auth_version", "must be 1 or 3, got %d", b.SwiftAuthVersion)
		}
		user := b.SwiftUser != "" && (b.SwiftKey != "" || b.SwiftKeyFile != "")
		app := b.SwiftAppCredentialID != "" && (b.SwiftAppCredentialSecret != "" || b.SwiftAppCredentialSecretFile != "")
		if user == app {
			bad("blobs.swift_user", "set either swift_user with swift_key (or swift_key_file), or swift_app_credential_id with its secret")
		}
		oneOf("blobs.swift_key", b.SwiftKey, b.SwiftKeyFile)
		oneOf("blobs.swift_app_credential_secret", b.SwiftAppCredentialSecret, b.SwiftAppCredentialSecretFile)
		oneOf("blobs.swift_temp_url_key", b.SwiftTempURLKey, b.SwiftTempURLKeyFile)
		if b.Redirect && b.SwiftTempURLKey == "" && b.SwiftTempURLKeyFile == "" {
			bad("blobs.redirect", "needs swift_temp_url_key (or swift_temp_url_key_file) with the swift driver")
		}
	default:
		bad("blobs.driver", "must be fs, postgres, s3 or swift, got %q", b.Driver)
	}
	if b.Shared && !objectStore {
		bad("blobs.shared", "is for the s3 and swift drivers, where several nodes can use one bucket")
	}
	if b.Redirect && !objectStore {
		bad("blobs.redirect", "is for the s3 and swift drivers")
	}
	if b.Redirect && (b.RedirectTTL < 1e9 || b.RedirectTTL > 7*24*3600e9) {
		bad("blobs.redirect_ttl", "must be between 1s and 168h, got %v", b.RedirectTTL)
	}
	return errs
}

// secret returns v, or the trimmed contents of file.
func secret(field, v, file string) (string, error) {
	if file == "" {
		return v, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s_file: %w", field, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s_file %s is empty", field, file)
	}
	return s, nil
}

// OpenBlobStore opens the blob driver cfg names, on its own: the postgres
// driver gets a pool of its own from store.dsn. For tools that work on a
// node's blobs without running the node (patchmesh storage copy). Close
// the returned closer when done. A nil log discards.
func OpenBlobStore(ctx context.Context, cfg Config, log *slog.Logger) (blob.Store, io.Closer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid config:\n%w", err)
	}
	var pool *pgxpool.Pool
	if cfg.Blobs.Driver == DriverPostgres {
		p, err := pgxpool.New(ctx, cfg.Store.DSN)
		if err != nil {
			return nil, nil, fmt.Errorf("open postgres %s: %w", cfg.RedactedDSN(), scrub(err, cfg.Store.DSN))
		}
		pool = p
	}
	s, err := openBlobStore(ctx, cfg, pool, log)
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		return nil, nil, err
	}
	return s, closerFunc(func() error {
		var err error
		if c, ok := s.(io.Closer); ok {
			err = c.Close()
		}
		if pool != nil {
			pool.Close()
		}
		return err
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// openBlobStore opens the configured driver; pool serves the postgres one.
func openBlobStore(ctx context.Context, cfg Config, pool *pgxpool.Pool, log *slog.Logger) (blob.Store, error) {
	b := cfg.Blobs
	switch b.Driver {
	case DriverFS:
		path := cfg.BlobPath()
		s, err := fsblob.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open blob dir %s: %w", path, err)
		}
		log.Info("blobs_open", "driver", DriverFS, "path", path)
		return s, nil
	case DriverPostgres:
		s, err := pgblob.Open(ctx, pool, pgblob.Options{ChunkSize: b.ChunkSize})
		if err != nil {
			return nil, fmt.Errorf("open postgres blobs: %w", err)
		}
		log.Info("blobs_open", "driver", DriverPostgres, "chunk_size", b.ChunkSize)
		return s, nil
	case DriverS3:
		sk, err := secret("blobs.s3_secret_key", b.S3SecretKey, b.S3SecretKeyFile)
		if err != nil {
			return nil, err
		}
		s, err := s3blob.Open(ctx, s3blob.Options{
			Bucket: b.S3Bucket, Prefix: b.S3Prefix, Region: b.S3Region, Endpoint: b.S3Endpoint,
			PathStyle: b.S3PathStyle, Insecure: !b.S3Secure, AccessKey: b.S3AccessKey, SecretKey: sk,
			CAFile: b.S3CAFile, PartSize: b.S3PartSize,
			Node: cfg.Node.Name, Shared: b.Shared, Log: log,
		})
		if err != nil {
			return nil, fmt.Errorf("open s3 blobs: %w", err)
		}
		log.Info("blobs_open", "driver", DriverS3, "bucket", b.S3Bucket, "prefix", b.S3Prefix,
			"endpoint", b.S3Endpoint, "shared", b.Shared, "static_credentials", b.S3AccessKey != "")
		return s, nil
	case DriverSwift:
		key, err := secret("blobs.swift_key", b.SwiftKey, b.SwiftKeyFile)
		if err != nil {
			return nil, err
		}
		appSecret, err := secret("blobs.swift_app_credential_secret", b.SwiftAppCredentialSecret, b.SwiftAppCredentialSecretFile)
		if err != nil {
			return nil, err
		}
		tempKey, err := secret("blobs.swift_temp_url_key", b.SwiftTempURLKey, b.SwiftTempURLKeyFile)
		if err != nil {
			return nil, err
		}
		s, err := swiftblob.Open(ctx, swiftblob.Options{
			AuthURL: b.SwiftAuthURL, AuthVersion: b.SwiftAuthVersion, User: b.SwiftUser, Key: key,
			Domain: b.SwiftDomain, Project: b.SwiftProject, ProjectDomain: b.SwiftProjectDomain,
			ApplicationCredentialID: b.SwiftAppCredentialID, ApplicationCredentialSecret: appSecret,
			Region: b.SwiftRegion, Container: b.SwiftContainer, Prefix: b.SwiftPrefix, CAFile: b.SwiftCAFile,
			TempURLKey: tempKey, Node: cfg.Node.Name, Shared: b.Shared, Log: log,
		})
		if err != nil {
			return nil, fmt.Errorf("open swift blobs: %w", err)
		}
		log.Info("blobs_open", "driver", DriverSwift, "auth_url", b.SwiftAuthURL, "container", b.SwiftContainer,
			"prefix", b.SwiftPrefix, "shared", b.Shared)
		return s, nil
	}
	return nil, errors.New("unknown blob driver " + b.Driver)
}

// blobRedirect is how long download redirect URLs live; 0 with redirects
// off.
func (n *Node) blobRedirect() time.Duration {
	if !n.cfg.Blobs.Redirect {
		return 0
	}
	return n.cfg.Blobs.RedirectTTL
}
