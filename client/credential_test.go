package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
)

// A node the machine registers at answers with a machine credential the
// machine presents at every later failover. One that is forged, names
// another machine or tier, or is dated ahead must not be kept: presented
// elsewhere it is refused, and one dated ahead would never be replaced by
// a genuine newer one, so a single bad answer would end failover for good.
func TestKeepCredentialKeepsOnlyTheIssuersCredentialForThisMachine(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	_, node, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	pub := node.Public().(ed25519.PublicKey)
	machine, foreign := strings.Repeat("a", 64), strings.Repeat("b", 64)
	issue := func(t *testing.T, key ed25519.PrivateKey, m, tier string, issued time.Time, ttl time.Duration) string {
		t.Helper()
		c, err := federation.IssueCredential(key, federation.MachineStatement{
			Machine: m, Tier: tier, Issuer: "edge-1", Issued: issued, Expires: issued.Add(ttl)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	held := issue(t, node, machine, "prod", now.Add(-time.Hour), 30*24*time.Hour)
	newer := issue(t, node, machine, "prod", now.Add(-time.Minute), 30*24*time.Hour)
	future := issue(t, node, machine, "prod", now.Add(365*24*time.Hour), 30*24*time.Hour)
	cases := []struct {
		name, held, cred string
		pub              ed25519.PublicKey
		want             string
	}{
		{"newer from the node", held, newer, pub, newer},
		{"first one", "", newer, pub, newer},
		{"older than held", newer, held, pub, newer},
		{"signed by another key", held, issue(t, other, machine, "prod", now, time.Hour), pub, held},
		{"another machine", held, issue(t, node, foreign, "prod", now, time.Hour), pub, held},
		{"another tier", held, issue(t, node, machine, "staging", now, time.Hour), pub, held},
		{"dated a year ahead", held, future, pub, held},
		{"expired", "", issue(t, node, machine, "prod", now.Add(-2*time.Hour), time.Hour), pub, ""},
		{"unreadable", held, "pmc_garbage", pub, held},
		{"issuer key unknown", held, newer, nil, held},
		{"none", held, "", pub, held},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &session{st: State{MachineID: machine, Tier: "prod", Credential: tc.held}}
			s.keepCredential(tc.cred, tc.pub, now)
			if s.st.Credential != tc.want {
				t.Errorf("kept %.40q…, want %.40q…", s.st.Credential, tc.want)
			}
		})
	}
	// An expired held credential gives way to a valid one, whatever their
	// issue times.
	s := &session{st: State{MachineID: machine, Tier: "prod",
		Credential: issue(t, node, machine, "prod", now.Add(-48*time.Hour), time.Hour)}}
	s.keepCredential(held, pub, now)
	if s.st.Credential != held {
		t.Errorf("an expired held credential was not replaced")
	}
}
