package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPanicBecomesLogged500 guards recoverPanics: a panicking handler
// answers 500 internal with the request ID and logs the panic.
func TestPanicBecomesLogged500(t *testing.T) {
	var logs bytes.Buffer
	s := &server{log: slog.New(NewLogHandler(slog.NewJSONHandler(&logs, nil))), metrics: NewMetrics(nil)}
	h := withRequestID(s.observe(s.recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))))
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set(RequestIDHeader, "panic-1")
	h.ServeHTTP(w, req)
	var body errorBody
	json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != 500 || body.Error.Code != codeInternal || !strings.Contains(body.Error.Message, "panic-1") || strings.Contains(w.Body.String(), "boom") {
		t.Errorf("answer %d %s, want 500 internal naming request panic-1 and not the panic", w.Code, w.Body)
	}
	if !strings.Contains(logs.String(), `"panic":"boom"`) || !strings.Contains(logs.String(), `"request_id":"panic-1"`) {
		t.Errorf("log %s, want the panic logged with its request ID", logs.String())
	}
	if !strings.Contains(logs.String(), `"msg":"request","method":"GET","route":"unmatched","path":"/x","status":500`) {
		t.Errorf("log %s, want an access line with status 500", logs.String())
	}
}

func TestClassifyConflictHidesDriverText(t *testing.T) {
	err := &wrapped{"sqlstore: add patch: already exists: conflict: constraint failed: UNIQUE constraint failed: patches.digest"}
	if got := conflictMessage(err); got != "add patch: already exists: conflict" {
		t.Errorf("conflictMessage = %q, want the store's words without the driver's", got)
	}
}

type wrapped struct{ s string }

func (w *wrapped) Error() string { return w.s }
