package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
)

// The mmap size reaches SQLite as asked: the pragma is per connection, so
// several connections are held at once and each is asked.
func TestOpenSQLiteWithSetsMmapSize(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		ask  int64
		want int64
	}{
		{"off", 0, 0},
		{"default", -1, DefaultSQLiteMmapSize},
		{"one MiB", 1 << 20, 1 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := OpenSQLiteWith(ctx, filepath.Join(t.TempDir(), "meta.db"), SQLiteOptions{MmapSize: c.ask}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 3 {
				conn, err := s.db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				var got int64
				if err := conn.QueryRowContext(ctx, `PRAGMA mmap_size`).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != c.want {
					t.Errorf("connection %d: mmap_size %d, want %d", i, got, c.want)
				}
			}
		})
	}
}
