package sqlstore

import "testing"

func TestLimitDefaultsAndCaps(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{0, defaultLimit},
		{-5, defaultLimit},
		{1, 1},
		{maxLimit, maxLimit},
		{maxLimit + 1, maxLimit},
		{1 << 40, maxLimit},
	} {
		if got := limit(tc.in); got != tc.want {
			t.Errorf("limit(%d): want %d, got %d", tc.in, tc.want, got)
		}
	}
}
