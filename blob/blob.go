// Package blob stores patch files by content address ("sha256:<hex>").
//
// A driver implements a handful of tiny interfaces (Receiver, Fetcher,
// Statter, Remover, Enumerator); replication, serving and every driver are
// written against those. The digest check lives in exactly one place, Put:
// drivers only stage bytes and commit them when told, so no driver can make
// an unverified blob visible. Drivers live in subpackages (blob/fsblob,
// blob/pgblob); the blobtest package is the contract suite each must pass.
//
// The package knows nothing of patches, tiers or who may read a blob: that
// is the catalog's and the api's business.
package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
)

var (
	// ErrNotFound means no committed blob has this digest.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch means the bytes received do not hash to the digest
	// they were sent under. Nothing was stored.
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrInvalidDigest means a string is not a sha256 content address.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrRangeNotSatisfiable means a blob does not have the bytes a
	// RangeOpener was asked for.
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
)

// Digest is a content address, "sha256:" followed by 64 lowercase hex digits.
type Digest string

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ParseDigest checks s and returns it as a Digest.
func ParseDigest(s string) (Digest, error) {
	if !digestRE.MatchString(s) {
		return "", fmt.Errorf("%w: %q", ErrInvalidDigest, s)
	}
	return Digest(s), nil
}

// Hex returns the digest's 64 hex digits without the algorithm prefix.
func (d Digest) Hex() string { return string(d[len("sha256:"):]) }

// String returns the full content address.
func (d Digest) String() string { return string(d) }

// FromBytes returns the digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest("sha256:" + hex.EncodeToString(sum[:]))
}

// Info describes a committed blob.
type Info struct {
	Digest   Digest
	Size     int64
	Modified time.Time
}

// Writer stages one blob's bytes. Nothing written is visible to readers
// until Commit returns nil; Abort discards the staged bytes. Exactly one of
// Commit or Abort must be called.
type Writer interface {
	io.Writer
	// Commit makes the staged bytes visible under the digest. Committing a
	// digest that is already present succeeds and keeps one copy. A Commit
	// that fails discards the staged bytes itself, as Abort would: Put does
	// not call Abort after it.
	Commit(ctx context.Context) error
	// Abort discards the staged bytes. After a successful Commit it does
	// nothing, so callers may defer it.
	Abort() error
}

// StagedOpener is implemented by Writers whose staged bytes can be read
// while they are still being written: OpenStaged returns a handle of its
// own on them that stays readable after Commit or Abort, until closed.
// Only the relaying of a blob still arriving uses it, and only to pass
// bytes on to a downstream node that checks the digest itself: staged
// bytes are unverified and never served as a blob.
type StagedOpener interface {
	OpenStaged() (ReaderAtCloser, error)
}

// ReaderAtCloser reads at offsets until closed.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// Receiver accepts new blobs. Use Put rather than calling it directly.
type Receiver interface {
	Create(ctx context.Context, d Digest) (Writer, error)
}

// Fetcher opens committed blobs. The reader seeks, so callers can serve
// ranges; the filesystem driver returns an *os.File so that net/http can
// send it with sendfile.
type Fetcher interface {
	Open(ctx context.Context, d Digest) (io.ReadSeekCloser, Info, error)
}

// Statter reports on a committed blob without reading it.
type Statter interface {
	Stat(ctx context.Context, d Digest) (Info, error)
}

// Remover deletes a committed blob. ErrNotFound if it is absent.
type Remover interface {
	Remove(ctx context.Context, d Digest) error
}

// Enumerator lists committed blobs in digest order, calling fn for each
// until fn returns an error, which it then returns.
type Enumerator interface {
	Enumerate(ctx context.Context, fn func(Info) error) error
}

// Section is what a RangeOpener opened: the blob's Info, and which of its
// bytes the reader holds.
type Section struct {
	Info
	Offset, Length int64
}

// RangeOpener is implemented by drivers on which every read is a request
// to another server (object stores). OpenRange reads the blob, or the one
// byte range rng names (an HTTP Range value such as "bytes=100-199",
// "bytes=-500"; "" for all), with one request, so that serving a download
// costs one upstream request whatever the client asked for.
type RangeOpener interface {
	OpenRange(ctx context.Context, d Digest, rng string) (io.ReadCloser, Section, error)
}

// Presigner is implemented by drivers whose store can hand a client a URL
// that reads a blob directly, without credentials, until ttl passes.
type Presigner interface {
	PresignGet(ctx context.Context, d Digest, ttl time.Duration) (string, error)
}

// Prober is implemented by drivers that can check the store end to end
// (write, read back and delete a tiny object), which a Stat cannot.
type Prober interface {
	Probe(ctx context.Context) error
}

// Claimer is implemented by drivers whose store other nodes share: Claim
// records that this node names d, found already present, so that another
// node's delete keeps it.
type Claimer interface {
	Claim(ctx context.Context, d Digest) error
}

// Store is a full blob driver.
type Store interface {
	Receiver
	Fetcher
	Statter
	Remover
	Enumerator
}

// PutChunk is the size of the reads and writes Put makes. io.Copy's 32 KiB
// cost a relay of a 100 MiB blob about 3,200 network reads, file writes and
// wake-ups of each downstream streaming it; 256 KiB cut the CPU of a
// 13-node cascade by a fifth (bench/RESULTS.md "100 MiB on a quiet
// machine"), and larger did not help.
const PutChunk = 256 << 10

// Put streams r into s under d, hashing as it writes, and commits only if
// the bytes hash to d. On a mismatch, a read error or a cancelled context
// nothing is left behind; a mismatch returns an error wrapping
// ErrDigestMismatch.
func Put(ctx context.Context, s Receiver, d Digest, r io.Reader) (Info, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return Info{}, err
	}
	w, err := s.Create(ctx, d)
	if err != nil {
		return Info{}, fmt.Errorf("blob put %s: %w", d, err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(w, h), ctxReader{ctx, r}, make([]byte, PutChunk))
	if err != nil {
		return Info{}, errors.Join(fmt.Errorf("blob put %s: %w", d, err), w.Abort())
	}
	got := Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	if got != d {
		return Info{}, errors.Join(fmt.Errorf("%w: want %s, got %s", ErrDigestMismatch, d, got), w.Abort())
	}
	if err := w.Commit(ctx); err != nil {
		return Info{}, fmt.Errorf("blob commit %s: %w", d, err)
	}
	return Info{Digest: d, Size: n, Modified: time.Now()}, nil
}

// ctxReader stops a long copy when its context ends, so that an abandoned
// upload or transfer does not run to completion.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
