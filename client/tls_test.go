package client

import (
	"slices"
	"testing"
)

// A client that started on https never goes to a learned plain-http node,
// where its tokens would cross the network in clear.
func TestLearnedNodesNeverWeakenTheScheme(t *testing.T) {
	c := &Client{cfg: Config{}}
	st := State{
		Server: "https://first.example:8443",
		Nodes:  []Node{{URL: "http://plain.example:8080"}, {URL: "https://second.example:8443"}},
		Registrations: map[string]NodeRegistration{
			"https://first.example:8443":  {},
			"http://plain.example:8080":   {},
			"https://second.example:8443": {},
		},
	}
	s := &session{c: c, st: st, down: map[string]bool{}}
	got, err := s.order()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, "http://plain.example:8080") {
		t.Errorf("order after an https first contact: %v, want no http node", got)
	}
	if !slices.Contains(got, "https://second.example:8443") {
		t.Errorf("order: %v, want the https node kept", got)
	}
	st.Server = "http://first.example:8080"
	s = &session{c: c, st: st, down: map[string]bool{}}
	if got, _ := s.order(); !slices.Contains(got, "http://plain.example:8080") {
		t.Errorf("order after an http first contact: %v, want the http node allowed", got)
	}
}
