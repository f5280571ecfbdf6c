package sqlstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
)

// RegisterMachines stores each machine with its token, as RegisterMachine
// does, and stores none when one of them is refused.
func TestRegisterMachinesIsAllOrNothing(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := t.Context()
			s, err := d.open(ctx, d.location(t))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			if _, err := s.AddTier(ctx, "dc1"); err != nil {
				t.Fatal(err)
			}
			batch := func(prefix string, n int) ([]catalog.Machine, []catalog.Token) {
				var ms []catalog.Machine
				var ts []catalog.Token
				for i := range n {
					_, tok, err := auth.NewToken(catalog.TokenMachine)
					if err != nil {
						t.Fatal(err)
					}
					id := fmt.Sprintf("%s%03d", prefix, i)
					tok.Tier, tok.Name, tok.MachineID = "dc1", id, id
					ms = append(ms, catalog.Machine{ID: id, Tier: "dc1", Kernel: "5.15.0-107.117-generic", Arch: "x86_64", ClientVersion: "test"})
					ts = append(ts, tok)
				}
				return ms, ts
			}
			ms, ts := batch("good", 3)
			if err := s.RegisterMachines(ctx, ms, ts); err != nil {
				t.Fatalf("RegisterMachines: %v", err)
			}
			for i, m := range ms {
				if _, err := s.Machine(ctx, m.ID); err != nil {
					t.Errorf("machine %s: %v", m.ID, err)
				}
				got, err := s.Token(ctx, ts[i].ID)
				if err != nil || got.MachineID != m.ID || !bytes.Equal(got.Hash, ts[i].Hash) {
					t.Errorf("token of %s: %+v, %v", m.ID, got, err)
				}
			}

			// The last machine's tier does not exist: the whole batch fails.
			ms, ts = batch("bad", 3)
			ms[2].Tier, ts[2].Tier = "nowhere", "nowhere"
			if err := s.RegisterMachines(ctx, ms, ts); !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("RegisterMachines with an unknown tier: %v, want ErrNotFound", err)
			}
			for _, m := range ms {
				if _, err := s.Machine(ctx, m.ID); !errors.Is(err, catalog.ErrNotFound) {
					t.Errorf("machine %s of the refused batch: %v, want ErrNotFound", m.ID, err)
				}
			}
		})
	}
}
