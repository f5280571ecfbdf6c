package objblob

import "testing"

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                string
		off, length, size int64
		ok                bool
	}{
		{"bytes 0-9/100", 0, 10, 100, true},
		{"bytes 99-99/100", 99, 1, 100, true},
		{"bytes 10-5/100", 0, 0, 0, false},
		{"bytes 0-100/100", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"bytes -1-5/100", 0, 0, 0, false},
		{"items 0-9/100", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		var oi ObjectInfo
		err := ParseContentRange(tc.in, &oi)
		if (err == nil) != tc.ok {
			t.Errorf("ParseContentRange(%q) error = %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (oi.Offset != tc.off || oi.Length != tc.length || oi.Size != tc.size) {
			t.Errorf("ParseContentRange(%q) = offset %d length %d size %d, want %d %d %d", tc.in, oi.Offset, oi.Length, oi.Size, tc.off, tc.length, tc.size)
		}
	}
}
