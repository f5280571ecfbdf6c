package migrations

import (
	"strings"
	"testing"
)

func TestListIsOrderedAndNamed(t *testing.T) {
	for _, d := range []Dialect{Postgres, SQLite} {
		ms, err := List(d)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if len(ms) == 0 || ms[0].Version != 1 {
			t.Fatalf("%s: want migrations starting at version 1, got %d files", d, len(ms))
		}
		for i, m := range ms {
			if i > 0 && m.Version <= ms[i-1].Version {
				t.Errorf("%s: version %d follows %d", d, m.Version, ms[i-1].Version)
			}
			if m.Name == "" || strings.TrimSpace(m.SQL) == "" {
				t.Errorf("%s: migration %d has no name or no SQL", d, m.Version)
			}
		}
	}
}

// Both dialects share one version sequence: a version means the same change
// in each, so the same version must carry the same name wherever it exists.
func TestDialectsShareOneVersionSequence(t *testing.T) {
	pg, err := List(Postgres)
	if err != nil {
		t.Fatal(err)
	}
	lite, err := List(SQLite)
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, m := range pg {
		names[m.Version] = m.Name
	}
	for _, m := range lite {
		if n, ok := names[m.Version]; ok && n != m.Name {
			t.Errorf("version %d is %q for postgres but %q for sqlite", m.Version, n, m.Name)
		}
	}
}

func TestUnknownDialectIsAnError(t *testing.T) {
	if _, err := List("oracle"); err == nil {
		t.Fatal("List(oracle): want an error, got none")
	}
}
