package sqlstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// A join token is stored, counted and used once, on both backends, and
// only while live: a use of a token with too many failures or past its
// expiry, or a second use, even racing the first, is ErrConflict and
// leaves the first use's record.
func TestJoinTokensUseOnce(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := t.Context()
			s, err := d.open(ctx, d.location(t))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
			tok := store.JoinToken{ID: "0123456789abcdef", Name: "edge-1", MACKey: "k", CreatedBy: "admin", Created: t0, Expires: t0.Add(time.Hour)}
			if err := s.AddJoinToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
			if err := s.AddJoinToken(ctx, tok); !errors.Is(err, catalog.ErrConflict) {
				t.Fatalf("the same ID again: want ErrConflict, got %v", err)
			}
			if err := s.AddJoinToken(ctx, store.JoinToken{ID: "x", Name: "bad name!", MACKey: "k", Created: t0, Expires: t0.Add(time.Hour)}); err == nil {
				t.Fatal("a bad node name was stored")
			}
			if n, err := s.FailJoinToken(ctx, tok.ID); err != nil || n != 1 {
				t.Fatalf("FailJoinToken: want 1, got %d %v", n, err)
			}
			// Live only while it has fewer failures than the limit and
			// has not expired: neither refusal uses it.
			if err := s.UseJoinToken(ctx, tok.ID, "cccccccccccccccc", "127.0.0.3", t0.Add(time.Minute), 1); !errors.Is(err, catalog.ErrConflict) {
				t.Fatalf("use with as many failures as the limit: want ErrConflict, got %v", err)
			}
			if err := s.UseJoinToken(ctx, tok.ID, "cccccccccccccccc", "127.0.0.3", tok.Expires, 5); !errors.Is(err, catalog.ErrConflict) {
				t.Fatalf("use at its expiry: want ErrConflict, got %v", err)
			}
			if err := s.UseJoinToken(ctx, tok.ID, "aaaaaaaaaaaaaaaa", "127.0.0.1", t0.Add(time.Minute), 2); err != nil {
				t.Fatal(err)
			}
			if err := s.UseJoinToken(ctx, tok.ID, "bbbbbbbbbbbbbbbb", "127.0.0.2", t0.Add(2*time.Minute), 5); !errors.Is(err, catalog.ErrConflict) {
				t.Fatalf("second use: want ErrConflict, got %v", err)
			}
			got, err := s.JoinToken(ctx, tok.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.UsedKeyID != "aaaaaaaaaaaaaaaa" || got.UsedFrom != "127.0.0.1" || !got.Used.Equal(t0.Add(time.Minute)) || got.Failures != 1 || got.MACKey != "k" {
				t.Fatalf("after use: got %+v, want used by aaaa… from 127.0.0.1 at +1m, 1 failure", got)
			}
			if _, err := s.JoinToken(ctx, "ffffffffffffffff"); !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("unknown token: want ErrNotFound, got %v", err)
			}
			all, err := s.JoinTokens(ctx)
			if err != nil || len(all) != 1 || all[0].ID != tok.ID {
				t.Fatalf("JoinTokens: want the one token, got %+v %v", all, err)
			}
		})
	}
}
