package api

import (
	"regexp"
	"strings"
	"testing"
)

// requestIDRule is the rule validRequestID implements by hand, as a
// regular expression to check it against.
var requestIDRule = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func TestValidRequestIDFollowsItsRule(t *testing.T) {
	for _, id := range []string{"", "a", "req-1.2_3", "A9", strings.Repeat("x", 64), strings.Repeat("x", 65),
		"has space", "new\nline", "x\x00", "é", "a/b", "a:b", "{json}", "%41", "x\r"} {
		if got, want := validRequestID(id), requestIDRule.MatchString(id); got != want {
			t.Errorf("validRequestID(%q) = %v, want %v", id, got, want)
		}
	}
	// Every single byte, alone and inside an otherwise valid ID.
	for b := 0; b < 256; b++ {
		for _, id := range []string{string([]byte{byte(b)}), "ab" + string([]byte{byte(b)}) + "cd"} {
			if got, want := validRequestID(id), requestIDRule.MatchString(id); got != want {
				t.Errorf("validRequestID(%q) = %v, want %v", id, got, want)
			}
		}
	}
}

func FuzzValidRequestID(f *testing.F) {
	for _, s := range []string{"", "abc", "a b", strings.Repeat("z", 70)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := validRequestID(id), requestIDRule.MatchString(id); got != want {
			t.Errorf("validRequestID(%q) = %v, want %v", id, got, want)
		}
	})
}

func BenchmarkRequestIDCheck(b *testing.B) {
	ids := []string{"", "0123456789abcdef01234567", "client-chosen.id_42"}
	b.Run("loop", func(b *testing.B) {
		for b.Loop() {
			for _, id := range ids {
				validRequestID(id)
			}
		}
	})
	b.Run("regexp", func(b *testing.B) {
		for b.Loop() {
			for _, id := range ids {
				requestIDRule.MatchString(id)
			}
		}
	})
}
