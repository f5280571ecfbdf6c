// Package objtest gives tests real object stores: a fresh MinIO bucket or
// Swift container per test on the servers scripts/minio.sh and
// scripts/swift.sh start (PATCHMESH_TEST_S3, PATCHMESH_TEST_SWIFT), removed
// with everything in it when the test ends; and Proxy, a fault-injecting
// HTTP proxy to put in front of either.
//
// A test that needs a server fails without one: it is never skipped.
package objtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ncw/swift/v2"
)

// S3 is where the test MinIO server is and how to log in.
type S3 struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
}

// S3Server reads PATCHMESH_TEST_S3 (http://ACCESS:SECRET@127.0.0.1:PORT).
func S3Server(t testing.TB) S3 {
	t.Helper()
	raw := os.Getenv("PATCHMESH_TEST_S3")
	if raw == "" {
		t.Fatal("PATCHMESH_TEST_S3 is not set: start MinIO with `PATCHMESH_TEST_S3=$(scripts/minio.sh)` (make test does)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		t.Fatalf("PATCHMESH_TEST_S3 must be http://ACCESS:SECRET@HOST:PORT")
	}
	secret, _ := u.User.Password()
	return S3{Endpoint: u.Scheme + "://" + u.Host, AccessKey: u.User.Username(), SecretKey: secret}
}

// Client returns an S3 client for the test server.
func (s S3) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// Name returns a fresh bucket or container name.
func Name() string {
	var b [6]byte
	rand.Read(b[:])
	return "pm-test-" + hex.EncodeToString(b[:])
}

// Bucket creates a fresh bucket and removes it, with every object and
// multipart upload in it, when t ends.
func (s S3) Bucket(t testing.TB) string {
	t.Helper()
	c := s.Client()
	name := Name()
	ctx := context.Background()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatalf("create bucket on %s: %v", s.Endpoint, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ups, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &name})
		if err == nil {
			for _, u := range ups.Uploads {
				c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &name, Key: u.Key, UploadId: u.UploadId})
			}
		}
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &name})
		for i := 0; p.HasMorePages() && i < 10000; i++ {
			out, err := p.NextPage(ctx)
			if err != nil {
				break
			}
			for _, o := range out.Contents {
				c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &name, Key: o.Key})
			}
		}
		if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &name}); err != nil {
			t.Logf("remove test bucket %s: %v", name, err)
		}
	})
	return name
}

// Swift is where the test Swift server is and how to log in (tempauth,
// auth v1).
type Swift struct {
	AuthURL string
	User    string
	Key     string
}

// SwiftServer reads PATCHMESH_TEST_SWIFT
// (http://HOST:PORT/auth/v1.0?user=ACCOUNT:USER&key=KEY).
func SwiftServer(t testing.TB) Swift {
	t.Helper()
	raw := os.Getenv("PATCHMESH_TEST_SWIFT")
	if raw == "" {
		t.Fatal("PATCHMESH_TEST_SWIFT is not set: start Swift with `PATCHMESH_TEST_SWIFT=$(scripts/swift.sh)` (make test does)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Query().Get("user") == "" {
		t.Fatalf("PATCHMESH_TEST_SWIFT must be http://HOST:PORT/auth/v1.0?user=ACCOUNT:USER&key=KEY")
	}
	q := u.Query()
	u.RawQuery = ""
	return Swift{AuthURL: u.String(), User: q.Get("user"), Key: q.Get("key")}
}

// Conn returns an authenticated connection to the test server.
func (s Swift) Conn(t testing.TB) *swift.Connection {
	t.Helper()
	c := &swift.Connection{UserName: s.User, ApiKey: s.Key, AuthUrl: s.AuthURL, AuthVersion: 1}
	if err := c.Authenticate(context.Background()); err != nil {
		t.Fatalf("swift auth at %s: %v", s.AuthURL, err)
	}
	return c
}

// Container creates a fresh container and removes it, with its objects,
// when t ends.
func (s Swift) Container(t testing.TB) string {
	t.Helper()
	c := s.Conn(t)
	name := Name()
	if err := c.ContainerCreate(context.Background(), name, nil); err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		names, err := c.ObjectNamesAll(ctx, name, nil)
		if err == nil {
			for _, n := range names {
				c.ObjectDelete(ctx, name, n)
			}
		}
		if err := c.ContainerDelete(ctx, name); err != nil && !strings.Contains(err.Error(), "Not Found") {
			t.Logf("remove test container %s: %v", name, err)
		}
	})
	return name
}
