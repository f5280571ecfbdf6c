package api

import "testing"

func TestSingleRange(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"bytes=0-9", "bytes=0-9"},
		{"bytes=10-", "bytes=10-"},
		{"bytes=-500", "bytes=-500"},
		{"bytes= 5-6", "bytes=5-6"},
		{"bytes=9-0", ""},
		{"bytes=0-1,5-6", ""},
		{"bytes=-", ""},
		{"bytes=a-b", ""},
		{"bytes=1-2-3", ""},
		{"items=0-9", ""},
		{"", ""},
		{"bytes=0-9\r\nX-Injected: 1", ""},
		{"bytes=1234567890123456789-", ""},
	} {
		if got := singleRange(tc.in); got != tc.want {
			t.Errorf("singleRange(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestETagMatches(t *testing.T) {
	const etag = `"sha256:ab"`
	for _, tc := range []struct {
		list string
		want bool
	}{
		{`"sha256:ab"`, true},
		{`W/"sha256:ab"`, true},
		{`"x", "sha256:ab"`, true},
		{`*`, true},
		{`"sha256:ac"`, false},
		{`sha256:ab`, false},
	} {
		if got := etagMatches(tc.list, etag); got != tc.want {
			t.Errorf("etagMatches(%q) = %v, want %v", tc.list, got, tc.want)
		}
	}
}
