package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// Offer index defaults.
const (
	// DefaultOfferIndexSize caps the answers the index holds: one per
	// (tier, kernel, arch) asked about, one per tier's rollouts, one per
	// withdrawal record asked for.
	DefaultOfferIndexSize = 100_000
	// DefaultOfferIndexMaxAge bounds how long an answer may outlive a
	// change made by another node sharing this node's database, which this
	// node's store.Changes does not hear of.
	DefaultOfferIndexMaxAge = time.Second
)

// offerIndex answers the check-in's store questions from memory: the
// newest live patch for (tier, kernel, arch) with the hub's signed record
// of it, a tier's rollouts, and the signed record that withdrew a digest.
// The store stays the truth: the index is filled from it on demand, so a
// cold start rebuilds it as machines ask, and each answer is served only
// while the store's generation (store.Changes, bumped after every committed
// write, the catalog's change log and synced records among them) is the one
// read before the answer was fetched, and for at most maxAge. Rollouts
// still gate every offer per machine (offerable): the index keeps the
// tier's rollouts, not their verdicts.
type offerIndex struct {
	changes *store.Changes
	maxAge  time.Duration
	size    int
	now     func() time.Time

	mu      sync.RWMutex
	entries map[offerKey]offerEntry
}

// offerKey names one cached answer. kind tells the questions apart.
type offerKey struct {
	kind               byte // 'n' newest, 'r' rollouts, 'w' withdrawal, 'p' patch, 'a' encoded answer
	tier, kernel, arch string
	digest             string
	// applied is, for an encoded answer, the applied digest whose
	// withdrawal record the answer carries; "" when it carries none.
	applied string
}

type offerEntry struct {
	gen     uint64
	fetched time.Time
	newest  newestAnswer // also a patch by digest ('p')
	rolls   []store.SignedRollout
	record  *federation.Envelope
	answer  *encodedOffer
}

// newestAnswer is the store's newest patch with its signed record, or
// ErrNotFound (err) when the tier has none for the kernel and arch.
type newestAnswer struct {
	patch  catalog.Patch
	signed *federation.Envelope
	err    error
}

// encodedOffer is a check-in's 200 answer as sent: the JSON of a
// federation.Offer and its headers. Its offerKey names everything the
// answer is made of but the heartbeat — the tier, kernel and arch, the
// digest offered (so a machine a rollout holds back, offered an older
// patch, meets another entry), the applied digest when a withdrawal record
// goes with it — and the entry's generation covers the signed records
// those name. The heartbeat changes every few seconds, so the entry keeps
// the one it was encoded with and serves only while the tier's newest is
// that one.
type encodedOffer struct {
	body            []byte
	contentLength   []string
	hbRecord, hbSig []byte
	hbHeader        []string // nil without a heartbeat
}

// jsonContentType is the Content-Type header value of every JSON answer,
// shared: net/http only reads header values.
var jsonContentType = []string{"application/json"}

// sameHeartbeat says whether the answer was encoded with hb.
func (a *encodedOffer) sameHeartbeat(hb *federation.Envelope) bool {
	if hb == nil {
		return a.hbHeader == nil
	}
	return a.hbHeader != nil && bytes.Equal(a.hbSig, hb.Sig) && bytes.Equal(a.hbRecord, hb.Record)
}

// write sends the answer with status 200.
func (a *encodedOffer) write(w http.ResponseWriter) {
	h := w.Header()
	if a.hbHeader != nil {
		h[federation.HeartbeatHeader] = a.hbHeader
	}
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = a.contentLength
	w.WriteHeader(http.StatusOK)
	// The status is out; a failed write means the client went away.
	_, _ = w.Write(a.body)
}

// encodeOffer encodes o as writeJSON would, with the heartbeat it carries.
func encodeOffer(o federation.Offer) (*encodedOffer, error) {
	body, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	body = append(body, '\n') // as json.Encoder ends it
	a := &encodedOffer{body: body, contentLength: []string{strconv.Itoa(len(body))}}
	if o.Heartbeat != nil {
		a.hbRecord, a.hbSig = o.Heartbeat.Record, o.Heartbeat.Sig
		a.hbHeader = []string{federation.EncodeHeartbeatHeader(*o.Heartbeat)}
	}
	return a, nil
}

// generation is the store's generation to tag an entry with, read before
// anything the entry is made of; 0 without an index.
func (x *offerIndex) generation() uint64 {
	if x == nil {
		return 0
	}
	return x.changes.Generation()
}

// cachedOffer is the encoded answer for k if it is current and was
// encoded with the heartbeat hb.
func (x *offerIndex) cachedOffer(k offerKey, hb *federation.Envelope) (*encodedOffer, bool) {
	if x == nil {
		return nil, false
	}
	e, _, ok := x.lookup(k)
	if !ok || e.answer == nil || !e.answer.sameHeartbeat(hb) {
		return nil, false
	}
	return e.answer, true
}

// putOffer keeps an encoded answer made from what the store held at
// generation gen.
func (x *offerIndex) putOffer(k offerKey, gen uint64, a *encodedOffer) {
	if x == nil {
		return
	}
	x.put(k, offerEntry{gen: gen, fetched: x.now(), answer: a})
}

func newOfferIndex(changes *store.Changes, now func() time.Time) *offerIndex {
	if changes == nil {
		return nil // nothing would tell it of a change: always ask the store
	}
	return &offerIndex{changes: changes, maxAge: DefaultOfferIndexMaxAge, size: DefaultOfferIndexSize,
		now: now, entries: make(map[offerKey]offerEntry)}
}

// lookup returns k's entry if it is current, and the generation to tag a
// fresh one with otherwise.
func (x *offerIndex) lookup(k offerKey) (offerEntry, uint64, bool) {
	gen := x.changes.Generation()
	now := x.now()
	x.mu.RLock()
	e, ok := x.entries[k]
	x.mu.RUnlock()
	if ok && e.gen == gen && now.Sub(e.fetched) < x.maxAge && !e.fetched.After(now) {
		return e, gen, true
	}
	return offerEntry{}, gen, false
}

func (x *offerIndex) put(k offerKey, e offerEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.entries) >= x.size {
		// Full: start over. Check-ins refill what they ask for.
		clear(x.entries)
	}
	x.entries[k] = e
}

// newest answers Store.Newest with the newest signed offer record of the
// patch. A nil index asks the store.
func (s *server) newest(ctx context.Context, tier, kernel, arch string) (catalog.Patch, *federation.Envelope, error) {
	x := s.offers
	k := offerKey{kind: 'n', tier: tier, kernel: kernel, arch: arch}
	var gen uint64
	if x != nil {
		e, g, ok := x.lookup(k)
		if ok {
			return e.newest.patch, e.newest.signed, e.newest.err
		}
		gen = g
	}
	var a newestAnswer
	a.patch, a.err = s.store.Newest(ctx, tier, kernel, arch)
	if a.err == nil {
		var err error
		if a.signed, err = s.signedRecord(ctx, tier, a.patch.Digest, offerTypes); err != nil {
			return catalog.Patch{}, nil, err
		}
	}
	if x != nil && (a.err == nil || errors.Is(a.err, catalog.ErrNotFound)) {
		x.put(k, offerEntry{gen: gen, fetched: x.now(), newest: a})
	}
	return a.patch, a.signed, a.err
}

// tierRollouts answers Store.ListRollouts(tier).
func (s *server) tierRollouts(ctx context.Context, tier string) ([]store.SignedRollout, error) {
	x := s.offers
	k := offerKey{kind: 'r', tier: tier}
	var gen uint64
	if x != nil {
		e, g, ok := x.lookup(k)
		if ok {
			return e.rolls, nil
		}
		gen = g
	}
	rs, err := s.store.ListRollouts(ctx, tier)
	if err == nil && x != nil {
		x.put(k, offerEntry{gen: gen, fetched: x.now(), rolls: rs})
	}
	return rs, err
}

// withdrawal is the newest signed record that withdrew or removed digest
// on tier, nil if there is none.
func (s *server) withdrawal(ctx context.Context, tier, digest string) (*federation.Envelope, error) {
	x := s.offers
	k := offerKey{kind: 'w', tier: tier, digest: digest}
	var gen uint64
	if x != nil {
		e, g, ok := x.lookup(k)
		if ok {
			return e.record, nil
		}
		gen = g
	}
	rec, err := s.signedRecord(ctx, tier, digest, withdrawalTypes)
	if err == nil && x != nil {
		x.put(k, offerEntry{gen: gen, fetched: x.now(), record: rec})
	}
	return rec, err
}

// patch answers Store.Patch(digest), for the download check (mayRead):
// which tiers a patch is live on.
func (s *server) patch(ctx context.Context, digest string) (catalog.Patch, error) {
	x := s.offers
	k := offerKey{kind: 'p', digest: digest}
	var gen uint64
	if x != nil {
		e, g, ok := x.lookup(k)
		if ok {
			return e.newest.patch, e.newest.err
		}
		gen = g
	}
	p, err := s.store.Patch(ctx, digest)
	if x != nil && (err == nil || errors.Is(err, catalog.ErrNotFound)) {
		x.put(k, offerEntry{gen: gen, fetched: x.now(), newest: newestAnswer{patch: p, err: err}})
	}
	return p, err
}
