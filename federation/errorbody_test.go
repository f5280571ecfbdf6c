package federation

import (
	"strings"
	"testing"
)

// An upstream that echoes the sync token in its error must not get it into
// the log or the sync status.
func TestErrorBodyCutsTheTokenAndBoundsTheText(t *testing.T) {
	const token = "pms_0123456789abcdef_secretsecretsecret"
	body := `{"error":{"code":"unauthorized","message":"token ` + token + ` refused` + strings.Repeat("x", 500) + `"}}`
	got := errorBody(strings.NewReader(body), token)
	if strings.Contains(got, token) || strings.Contains(got, "secretsecret") {
		t.Errorf("error text carries the token: %q", got)
	}
	if !strings.Contains(got, "unauthorized") || len(got) > 300 {
		t.Errorf("want the code and at most ~200 bytes of message, got %d bytes: %q", len(got), got)
	}
}
