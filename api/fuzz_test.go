package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzDecode: the API's JSON decoding (decodeLimited, as every JSON
// endpoint reads its body) never panics; what it accepts is one JSON
// document without duplicate keys that encoding/json reads into the same
// value, and what it refuses is refused as a client error, never a 500.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"name":"lab"}`, `{"name":"lab","name":"x"}`, `{"name":"lab","NAME":"x"}`, `{"name":"lab"} {}`,
		`{"tier":"stable","name":"ci","expires":"2026-12-01T00:00:00Z"}`, `[]`, `null`, `{"name":1}`, `{"x":{"a":[1,{"b":2,"b":3}]}}`,
		"", " ", "\xff", `{"name":"` + string(bytes.Repeat([]byte("a"), 100)) + `"}`,
	} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte(`{"name":"lab"}`), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, ctype string) {
		var v struct {
			Name    string         `json:"name"`
			Tier    string         `json:"tier"`
			Expires string         `json:"expires"`
			X       map[string]any `json:"x"`
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/admin/tiers", bytes.NewReader(body))
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		err := decodeLimited(httptest.NewRecorder(), r, &v, false, 1<<16)
		if err != nil {
			if status, _ := classify(err); status >= 500 {
				t.Fatalf("decode error %v classified %d, want a 4xx", err, status)
			}
			return
		}
		if checkDuplicateKeys(body) != nil || !json.Valid(body) {
			t.Fatalf("accepted %q despite duplicate keys or invalid JSON", body)
		}
	})
}
