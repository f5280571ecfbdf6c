package sqlstore

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/migrations"
)

// The feed must be read through its partial indexes, so a page costs the
// same however long the log grows. This checks the plans rather than
// timing anything: on a log of 20,000 signed events where the tier read
// holds one in a hundred, each feed query must walk events_feed (and the
// by-hub one find its start through events_feed_hub).
func TestFeedQueriesUseTheFeedIndexes(t *testing.T) {
	ctx := t.Context()
	lite, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "p.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	pg, err := OpenPostgres(ctx, pgtest.New(t), PostgresOptions{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	fill := map[migrations.Dialect]string{
		migrations.SQLite: `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
			INSERT INTO events (seq, type, tier, digest, data, created_us, record, sig, hub_seq)
			SELECT i, 'patch.added', CASE WHEN i % 100 = 0 THEN 'edge' ELSE 'beta' END, 'd' || (i % 7), '', 0, X'72', X'73', i FROM n`,
		migrations.Postgres: `INSERT INTO events (seq, type, tier, digest, data, created_us, record, sig, hub_seq)
			SELECT i, 'patch.added', CASE WHEN i % 100 = 0 THEN 'edge' ELSE 'beta' END, 'd' || (i % 7), '', 0, '\x72'::bytea, '\x73'::bytea, i
			FROM generate_series(1, 20000) AS i`,
	}
	for _, s := range []*Store{lite, pg} {
		t.Run(string(s.dialect), func(t *testing.T) {
			if _, err := s.db.ExecContext(ctx, fill[s.dialect]); err != nil {
				t.Fatal(err)
			}
			if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
				t.Fatal(err)
			}
			explain := "EXPLAIN QUERY PLAN "
			if s.dialect == migrations.Postgres {
				explain = "EXPLAIN "
			}
			for _, tc := range []struct {
				name  string
				query string
				args  []any
				want  []string
			}{
				{"by seq", feedBySeq, []any{"edge", 5000, 100}, []string{"events_feed "}},
				{"by hub seq", feedByHub, []any{"edge", 5000, 100}, []string{"events_feed ", "events_feed_hub"}},
				{"head", feedHead, []any{"edge"}, []string{"events_feed "}},
				{"skip reason", skipReason, []any{"edge", "d", 5000}, []string{"events_unavailable"}},
				// A machine's check-in: the signed record of one patch.
				{"signed events", signedEventsQuery([]string{"$4", "$5"}), []any{"beta", "d3", 1, "patch.added", "patch.promoted"}, []string{"events_subject"}},
			} {
				rows, err := s.db.QueryContext(ctx, explain+tc.query, tc.args...)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				cols, err := rows.Columns()
				if err != nil {
					t.Fatal(err)
				}
				var plan strings.Builder
				for rows.Next() {
					vals := make([]any, len(cols))
					ptrs := make([]any, len(cols))
					for i := range vals {
						ptrs[i] = &vals[i]
					}
					if err := rows.Scan(ptrs...); err != nil {
						t.Fatal(err)
					}
					// The plan text is the last column in both dialects.
					plan.WriteString(asText(vals[len(vals)-1]) + " \n")
				}
				rows.Close()
				for _, idx := range tc.want {
					if !strings.Contains(plan.String(), idx) {
						t.Errorf("%s feed query: want a plan through %s, got:\n%s", tc.name, idx, plan.String())
					}
				}
			}
		})
	}
}

func asText(v any) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	s, _ := v.(string)
	return s
}
