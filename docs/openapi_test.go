// Package docs holds no code: its tests keep openapi.yaml true to the
// API as built. The description must load and validate, name exactly the
// routes and methods the router serves, and describe the requests and
// answers of a real hub and edge.
package docs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

func TestMain(m *testing.M) { os.Exit(meshtest.Main(m)) }

const specFile = "openapi.yaml"

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(specFile)
	if err != nil {
		t.Fatalf("load %s: %v", specFile, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s does not validate: %v", specFile, err)
	}
	return doc
}

// TestOpenAPIValidates loads the description and validates it as OpenAPI 3.
func TestOpenAPIValidates(t *testing.T) {
	doc := loadSpec(t)
	if doc.Paths.Len() == 0 {
		t.Fatalf("%s: no paths", specFile)
	}
}

// specMethods are an operation's methods, in the router's spelling.
func specMethods(item *openapi3.PathItem) []string {
	var ms []string
	for m := range item.Operations() {
		ms = append(ms, strings.ToUpper(m))
	}
	slices.Sort(ms)
	return ms
}

// TestOpenAPIMatchesRouter compares the description's paths and methods
// with the routes the node's router serves, both ways.
func TestOpenAPIMatchesRouter(t *testing.T) {
	doc := loadSpec(t)
	routes, err := api.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) == 0 {
		t.Fatal("api.Routes: no routes")
	}
	inRouter := map[string]bool{}
	for _, r := range routes {
		inRouter[r.Path] = true
		item := doc.Paths.Value(r.Path)
		if item == nil {
			t.Errorf("route %s %v is not in %s", r.Path, r.Methods, specFile)
			continue
		}
		if got := specMethods(item); !slices.Equal(got, r.Methods) {
			t.Errorf("%s: the router serves %v, %s describes %v", r.Path, r.Methods, specFile, got)
		}
	}
	for path := range doc.Paths.Map() {
		if !inRouter[path] {
			t.Errorf("%s describes %s, which the router does not serve", specFile, path)
		}
	}
}

// authenticate checks that a request carries the credential a security
// scheme of the description names, so that an operation documented with the
// wrong credential fails validation.
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	req := in.RequestValidationInput.Request
	switch in.SecuritySchemeName {
	case "session": // the dashboard's cookie
		if c, err := req.Cookie("patchmesh_session"); err != nil || c.Value == "" {
			return in.NewError(errors.New("want the patchmesh_session cookie"))
		}
		return nil
	case "csrf":
		if req.Header.Get("X-CSRF-Token") == "" {
			return in.NewError(errors.New("want X-CSRF-Token"))
		}
		return nil
	}
	want := map[string]string{
		"basic":             "Basic ",
		"macaroon":          "Macaroon ",
		"authToken":         "Bearer pma_",
		"machineToken":      "Bearer pmm_",
		"syncToken":         "Bearer pms_",
		"machineCredential": "Bearer pmc_",
	}[in.SecuritySchemeName]
	if want == "" {
		return fmt.Errorf("unknown security scheme %q", in.SecuritySchemeName)
	}
	if !strings.HasPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), want) {
		return in.NewError(fmt.Errorf("want Authorization %s…", want))
	}
	return nil
}

// checker sends requests to live nodes and validates each request and its
// answer against the description.
type checker struct {
	t      *testing.T
	router routers.Router
	// done holds the operations whose request validated and that answered
	// with a 2xx or 3xx status whose answer validated too.
	done map[string]bool
}

// call is one request to validate.
type call struct {
	node   *meshtest.Node
	method string
	path   string // with the query
	cred   string // the Authorization header value
	body   any    // []byte sent raw, anything else as JSON
	header map[string]string
	// want is the status the node must answer; -1 takes any (the
	// answer is validated all the same).
	want int
	// badRequest says the request itself breaks the description (a missing
	// credential, an unknown field): validating it must fail. The answer
	// is validated all the same.
	badRequest bool
	// base and client, when set, send the call elsewhere than node.URL
	// with another client: a peer listener, over mutual TLS.
	base   string
	client *http.Client
}

// do sends c, checks the status and validates both sides; it returns the
// answer's body.
func (ck *checker) do(c call) []byte {
	t := ck.t
	t.Helper()
	var raw []byte
	ctype := ""
	switch b := c.body.(type) {
	case nil:
	case []byte:
		raw, ctype = b, "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		raw, ctype = j, "application/json"
	}
	newReq := func() *http.Request {
		var rd io.Reader
		if raw != nil {
			rd = bytes.NewReader(raw)
		}
		base := c.node.URL
		if c.base != "" {
			base = c.base
		}
		req, err := http.NewRequestWithContext(t.Context(), c.method, base+c.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if c.cred != "" {
			req.Header.Set("Authorization", c.cred)
		}
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		return req
	}
	what := c.method + " " + c.path + " on " + c.node.Name

	// Validation reads the body: validate one copy, send another.
	vreq := newReq()
	route, params, err := ck.router.FindRoute(vreq)
	if err != nil {
		t.Errorf("%s: not in %s: %v", what, specFile, err)
		return nil
	}
	in := &openapi3filter.RequestValidationInput{
		Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: authenticate},
	}
	reqErr := openapi3filter.ValidateRequest(t.Context(), in)
	switch {
	case reqErr != nil && !c.badRequest:
		t.Errorf("%s: request does not match %s: %v", what, specFile, reqErr)
	case reqErr == nil && c.badRequest:
		t.Errorf("%s: a request that breaks the API validated against %s", what, specFile)
	}

	client := http.DefaultClient
	if c.client != nil {
		client = c.client
	}
	resp, err := client.Do(newReq())
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: read answer: %v", what, err)
	}
	if c.want != -1 && resp.StatusCode != c.want {
		t.Errorf("%s: want status %d, got %d: %s", what, c.want, resp.StatusCode, body)
		return body
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(t.Context(), out); err != nil {
		t.Errorf("%s: answer %d does not match %s: %v\nbody: %.2000s", what, resp.StatusCode, specFile, err, body)
		return body
	}
	if reqErr == nil && resp.StatusCode < 400 {
		ck.done[strings.ToUpper(c.method)+" "+route.Path] = true
	}
	return body
}

// decode unmarshals an answer the test needs a value from.
func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

func digestOf(b []byte) string { return meshtest.Digest(b) }

// lookup walks a decoded JSON answer along path: object keys and array
// indexes, dot-separated. A JSON null counts as absent.
func lookup(v any, path string) (any, bool) {
	for _, k := range strings.Split(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			v = c[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
		if v == nil {
			return nil, false
		}
	}
	return v, true
}

// has fails unless the answer holds a value at every path. The description
// lets answers leave out optional fields; this says that the answers of
// this scenario carry them, so that a field the code stops sending fails
// here while its type is held by the description.
func has(t *testing.T, what string, body []byte, paths ...string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("%s: answer is not JSON: %v: %.500s", what, err, body)
		return
	}
	for _, p := range paths {
		if _, ok := lookup(v, p); !ok {
			t.Errorf("%s: answer has no %s: %.2000s", what, p, body)
		}
	}
}

// lacks fails if the answer holds a value at any of paths.
func lacks(t *testing.T, what string, body []byte, paths ...string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("%s: answer is not JSON: %v: %.500s", what, err, body)
		return
	}
	for _, p := range paths {
		if got, ok := lookup(v, p); ok {
			t.Errorf("%s: answer has %s = %v, want none", what, p, got)
		}
	}
}

// pageThrough follows a listing one item a page, validating every page,
// and fails unless it took more than one page and the last has no next.
// It returns the first page's next cursor.
func (ck *checker) pageThrough(n *meshtest.Node, cred, path string) string {
	t := ck.t
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	first, after := "", ""
	for i := range 20 {
		p := path + sep + "limit=1"
		if after != "" {
			p += "&after=" + url.QueryEscape(after)
		}
		after = decode[struct{ Next string }](t, ck.do(call{node: n, method: "GET", path: p, cred: cred, want: 200})).Next
		if i == 0 {
			first = after
		}
		if after == "" {
			if i == 0 {
				t.Errorf("%s: one page of one item: want more", path)
			}
			return first
		}
	}
	t.Errorf("%s: still a next cursor after 20 pages", path)
	return first
}

// wantField fails unless the answer is an invalid_input error naming field.
func wantField(t *testing.T, what string, body []byte, field string) {
	t.Helper()
	e := decode[struct {
		Error struct{ Code, Field string }
	}](t, body).Error
	if e.Code != "invalid_input" || e.Field != field {
		t.Errorf("%s: want invalid_input on %s, got %s on %q", what, field, e.Code, e.Field)
	}
}

// TestOpenAPIDescribesLiveNodes drives a real hub and an edge that syncs
// from it, with gossip on, through every operation of the description, and
// validates each request and answer with openapi3filter. A field missing
// from an answer, a wrong type, an undocumented status or credential fails;
// a field the description does not name does not. It ends by checking that
// every documented operation was exercised.
func TestOpenAPIDescribesLiveNodes(t *testing.T) {
	doc := loadSpec(t)
	// The dashboard's files and event stream are text the description
	// types as strings.
	for _, ct := range []string{"text/html", "text/javascript", "text/css", "text/event-stream"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.FileBodyDecoder)
	}

	// An endorsement in the hub's config, so that offers and registrations
	// carry one.
	_, oldKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	newKey, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	endorsement, err := federation.Endorse(oldKey, newKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	m := meshtest.New(t)
	m.Gossip = "local"
	// The main listener's routes with sync tokens, the node admitted by
	// hand below: a plain mesh. The peer listener's routes are exercised
	// on phub's mesh, below.
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Configure: func(c *node.Config) {
		c.Sync.Endorsements = []string{federation.FormatEndorsement(endorsement)}
	}})
	edge := m.Start(meshtest.Spec{Name: "edge", Role: node.RoleEdge, Links: []meshtest.Link{{
		Tier: "stable", Upstreams: []meshtest.Upstream{{URL: hub.URL, Token: hub.SyncToken(t, "stable", "edge")}},
	}}})

	// A hub with a peer listener, in a mesh of its own, for the join and
	// the peer routes, which are served there only.
	pm := meshtest.New(t)
	phub := pm.Start(meshtest.Spec{Name: "phub", Role: node.RoleHub, Peer: true})

	// The description's server is a default; these nodes are where they are.
	doc.Servers = openapi3.Servers{{URL: hub.URL}, {URL: edge.URL}, {URL: phub.URL}, {URL: phub.PeerURL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	ck := &checker{t: t, router: router, done: map[string]bool{}}

	// Operations.
	ck.do(call{node: hub, method: "GET", path: "/debug/info", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/debug/status", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/metrics", want: 200})

	// Login.
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(meshtest.AdminUser+":"+meshtest.AdminPassword))
	login := decode[struct{ Macaroon string }](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/login", cred: basic, want: 200}))
	admin := "Macaroon " + login.Macaroon
	edgeAdmin := edge.Admin(t)
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/login", cred: "Basic " + base64.StdEncoding.EncodeToString([]byte("nobody:wrong")), want: 401})

	// Tiers.
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/tiers", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/tiers", cred: admin, body: map[string]string{"name": "lab"}, want: 201})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/tiers", cred: admin, body: map[string]string{"name": "lab"}, want: 409})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/tiers/lab", cred: admin, want: 204})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/tiers", want: 401, badRequest: true})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/tiers", cred: admin, body: map[string]any{"name": "lab", "colour": "red"}, want: 400, badRequest: true})

	// Tokens.
	authTok := decode[struct{ Token string }](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/auth-tokens", cred: admin,
		body: map[string]string{"tier": "edge", "name": "fleet-a"}, want: 201})).Token
	spare := decode[struct{ Info struct{ ID string } }](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/auth-tokens", cred: admin,
		body: map[string]string{"tier": "edge", "name": "spare"}, want: 201})).Info.ID
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/auth-tokens", cred: admin, want: 200})
	ck.pageThrough(hub, admin, "/v1/admin/auth-tokens")
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/auth-tokens/" + spare, cred: admin, want: 204})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/auth-tokens", cred: admin, want: 200}) // with a revoked one
	syncTok := decode[struct {
		Token string
		Info  struct{ ID string }
	}](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/sync-tokens", cred: admin,
		body: map[string]any{"tier": "edge", "name": "dc-east", "valid_until": time.Now().Add(time.Hour).UTC()}, want: 201}))
	spareSync := decode[struct{ Info struct{ ID string } }](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/sync-tokens", cred: admin,
		body: map[string]string{"tier": "edge", "name": "spare"}, want: 201})).Info.ID
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/sync-tokens", cred: admin, want: 200})
	syncNext := ck.pageThrough(hub, admin, "/v1/admin/sync-tokens")
	// A cursor belongs to its listing.
	wantField(t, "auth tokens after a sync tokens cursor", ck.do(call{node: hub, method: "GET", path: "/v1/admin/auth-tokens?after=" + syncNext, cred: admin, want: 400}), "after")
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/sync-tokens?after=not%20a%20cursor", cred: admin, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/sync-tokens/" + spareSync, cred: admin, want: 204})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/sync-tokens/0123456789abcdef", cred: admin, want: 404})

	// Patches, at the hub.
	content := []byte("openapi test patch, version 1")
	digest := digestOf(content)
	q := url.Values{"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.1"},
		"cves": {"CVE-2024-1234,CVE-2024-5678"}, "description": {"fixes two things"}, "size": {fmt.Sprint(len(content))}}
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + q.Encode(), cred: admin, body: content, want: 201})
	// The same upload again is a repeat; the same file as another version is not.
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + q.Encode(), cred: admin, body: content, want: 200})
	other := url.Values{"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.7"}}
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + other.Encode(), cred: admin, body: content, want: 409})
	// Another file under a kernel, arch and version that have one.
	another := []byte("another file as version 107.1")
	taken := url.Values{"digest": {digestOf(another)}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.1"}}
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + taken.Encode(), cred: admin, body: another, want: 409})
	// A second patch, newer, for the machine's tier only.
	content2 := []byte("openapi test patch, version 2")
	digest2 := digestOf(content2)
	q2 := url.Values{"digest": {digest2}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.2"}}
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + q2.Encode(), cred: admin, body: content2, want: 201})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches/" + digest2 + "/promote", cred: admin, body: map[string]string{"tier": "edge"}, want: 200})
	patchesNext := ck.pageThrough(hub, admin, "/v1/admin/patches")
	wantField(t, "patches after a sync tokens cursor", ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches?after=" + syncNext, cred: admin, want: 400}), "after")
	byPrefix := decode[struct{ Patches []struct{ Digest string } }](t,
		ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches?digest_prefix=" + digest2[:20], cred: admin, want: 200})).Patches
	if len(byPrefix) != 1 || byPrefix[0].Digest != digest2 {
		t.Errorf("patches by digest prefix %s: got %v, want %s alone", digest2[:20], byPrefix, digest2)
	}
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches?digest_prefix=sha256:XYZ", cred: admin, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches?kernel=5.15.0-", cred: admin, want: 400, badRequest: true})
	bad := url.Values{"digest": {digestOf([]byte("other"))}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.9"}}
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + bad.Encode(), cred: admin, body: content, want: 422})
	ck.do(call{node: edge, method: "POST", path: "/v1/admin/patches?" + q.Encode(), cred: edgeAdmin, body: content, want: 409})
	badCVE := url.Values{"digest": {digestOf([]byte("cve"))}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.8"}, "cves": {"CVE-24-1"}}
	wantField(t, "upload with a bad CVE", ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches?" + badCVE.Encode(), cred: admin, body: []byte("cve"), want: 400, badRequest: true}), "cves")
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches/" + digest, cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches/" + digestOf([]byte("none")), cred: admin, want: 404})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches/" + digest + "/promote", cred: admin, body: map[string]string{"tier": "edge"}, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches/107.1/promote", cred: admin, body: map[string]string{"tier": "stable"}, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/promote-all", cred: admin, body: map[string]string{"from": "edge", "to": "beta"}, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches?tier=edge&withdrawn=true&limit=10", cred: admin, want: 200})

	// Nodes, admitted at the hub (the hub on every tier, the edge on
	// stable), before machines are told of them. The hub admitted itself
	// at its first start, on the tiers it had then: admitted again, it
	// covers the tiers made since.
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/nodes/hub", cred: admin, want: 204})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/nodes", cred: admin, want: 201,
		body: map[string]any{"name": "hub", "key": hub.NodeKey(t), "urls": []string{hub.URL}}})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/nodes", cred: admin, want: 201,
		body: map[string]any{"name": "edge", "key": edge.NodeKey(t), "urls": []string{edge.URL}, "tiers": []string{"stable"}}})
	// Admitted again on no new tier: a conflict (on a new tier it would
	// extend the admission).
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/nodes", cred: admin, want: 409,
		body: map[string]any{"name": "edge", "key": edge.NodeKey(t), "urls": []string{edge.URL}, "tiers": []string{"stable"}}})
	ck.do(call{node: edge, method: "POST", path: "/v1/admin/nodes", cred: edgeAdmin, want: 409,
		body: map[string]any{"name": "edge", "key": edge.NodeKey(t), "urls": []string{edge.URL}}})
	// Moved in place: here onto one more tier; refused when nothing
	// would change, for a name never admitted, and off the hub.
	ck.do(call{node: hub, method: "PATCH", path: "/v1/admin/nodes/edge", cred: admin, want: 200,
		body: map[string]any{"urls": []string{edge.URL}, "tiers": []string{"beta"}}})
	ck.do(call{node: hub, method: "PATCH", path: "/v1/admin/nodes/edge", cred: admin, want: 409,
		body: map[string]any{"urls": []string{edge.URL}}})
	ck.do(call{node: hub, method: "PATCH", path: "/v1/admin/nodes/nowhere", cred: admin, want: 404,
		body: map[string]any{"urls": []string{edge.URL}}})
	ck.do(call{node: hub, method: "PATCH", path: "/v1/admin/nodes/edge", cred: admin, want: 400, badRequest: true,
		body: map[string]any{"tiers": []string{"Not A Tier"}}})
	ck.do(call{node: edge, method: "PATCH", path: "/v1/admin/nodes/edge", cred: edgeAdmin, want: 409,
		body: map[string]any{"urls": []string{edge.URL}}})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/nodes", cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/roster?tier=stable", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/roster", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/roster?tier=Not%20A%20Tier", want: 400, badRequest: true})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/hello?nonce=openapi-test-nonce-0123456789", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/hello?nonce=short", want: 400, badRequest: true})

	// A machine on tier edge.
	regBody := ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + authTok, want: 201,
		body: map[string]string{"machine_id": "0123456789abcdef0123456789abcdef", "kernel": "5.15.0-107.117-generic", "arch": "x86_64", "client_version": "1.0.0"}})
	has(t, "registration with an auth token", regBody, "credential", "token_record.record", "token_record.sig", "endorsements.0.record")
	reg := decode[struct {
		MachineToken string `json:"machine_token"`
		Credential   string
	}](t, regBody)
	machine := "Bearer " + reg.MachineToken
	// The hub's own credential registers the machine again, as another
	// admitted node's would: as the bearer, and in the body.
	byCred := ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + reg.Credential, want: 201,
		body: map[string]string{"kernel": "5.15.0-107.117-generic", "arch": "x86_64", "client_version": "1.0.0"}})
	has(t, "registration with a credential", byCred, "credential", "endorsements")
	lacks(t, "registration with a credential", byCred, "token_record")
	ck.do(call{node: hub, method: "POST", path: "/v1/client/register", want: 201,
		body: map[string]string{"credential": reg.Credential, "kernel": "5.15.0-107.117-generic", "arch": "x86_64", "client_version": "1.0.0"}})
	wantField(t, "registration with a bad kernel", ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + authTok, want: 400, badRequest: true,
		body: map[string]string{"machine_id": "0123456789abcdef0123456789abcdef", "kernel": "5.15.0-107.117-generic-", "arch": "x86_64", "client_version": "1.0.0"}}), "kernel")
	// A second machine, so that machine listings have two pages.
	ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + authTok, want: 201,
		body: map[string]string{"machine_id": "fedcba9876543210fedcba9876543210", "kernel": "6.1.0-18-amd64", "arch": "x86_64", "client_version": "1.0.0"}})
	machine = "Bearer " + decode[struct {
		MachineToken string `json:"machine_token"`
	}](t, ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + authTok, want: 201,
		body: map[string]string{"machine_id": "0123456789abcdef0123456789abcdef", "kernel": "5.15.0-107.117-generic", "arch": "x86_64", "client_version": "1.0.0"}})).MachineToken
	ck.do(call{node: hub, method: "GET", path: "/v1/client/status", cred: machine, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/status", cred: "Bearer " + syncTok.Token, want: 403, badRequest: true})
	offer := ck.do(call{node: hub, method: "GET", path: "/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64", cred: machine, want: 200})
	has(t, "offer", offer, "signed.record", "signed.sig", "endorsements.0.sig")
	lacks(t, "offer of the newest patch", offer, "withdrawal")
	if d := decode[struct{ Digest string }](t, offer).Digest; d != digest2 {
		t.Errorf("offer: digest %s, want the newest, %s", d, digest2)
	}
	ck.do(call{node: hub, method: "GET", path: "/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64&applied=107.2", cred: machine, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/patch?kernel=5.15.0-108.118-generic&arch=x86_64", cred: machine, want: 404})
	ck.do(call{node: hub, method: "POST", path: "/v1/client/checkin", cred: machine, want: 200, body: map[string]any{
		"state": "applied", "kernel": "5.15.0-107.117-generic", "arch": "x86_64", "patch_version": "107.1", "client_version": "1.0.0", "uptime_seconds": 123}})
	ck.do(call{node: hub, method: "GET", path: "/v1/client/nodes", cred: machine, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/machines?tier=edge&state=applied", cred: admin, want: 200})
	machinesNext := ck.pageThrough(hub, admin, "/v1/admin/machines")
	wantField(t, "machines after a patches cursor", ck.do(call{node: hub, method: "GET", path: "/v1/admin/machines?after=" + patchesNext, cred: admin, want: 400}), "after")

	// Revocation: a machine enrolled with its own token, revoked with it;
	// machine tokens listed and one revoked; a machine revoked, then
	// deleted.
	doomed := decode[struct {
		Token string
		Info  struct{ ID string }
	}](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/auth-tokens", cred: admin,
		body: map[string]string{"tier": "edge", "name": "doomed"}, want: 201}))
	ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + doomed.Token, want: 201,
		body: map[string]string{"machine_id": "doomed-machine-0123456789", "kernel": "6.1.0-18-amd64", "arch": "x86_64", "client_version": "1.0.0"}})
	gone := decode[struct {
		MachinesRevoked []string `json:"machines_revoked"`
	}](t, ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/auth-tokens/" + doomed.Info.ID + "?machines=true", cred: admin, want: 200}))
	if len(gone.MachinesRevoked) != 1 {
		t.Errorf("revoking an enrollment token with its machines: want 1 machine revoked, got %v", gone.MachinesRevoked)
	}
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/sync-tokens/" + spare + "?machines=true", cred: admin, want: 400})
	mtoks := decode[struct{ Tokens []struct{ ID string } }](t, ck.do(call{node: hub, method: "GET", path: "/v1/admin/machine-tokens", cred: admin, want: 200}))
	if len(mtoks.Tokens) == 0 {
		t.Fatalf("machine tokens: want the registered machines' tokens, got none")
	}
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/machine-tokens/" + mtoks.Tokens[len(mtoks.Tokens)-1].ID, cred: admin, want: 204})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/machine-tokens/0123456789abcdef", cred: admin, want: 404})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/machines/" + gone.MachinesRevoked[0] + "/revoke", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/machines/not-a-machine/revoke", cred: admin, want: 400, badRequest: true})
	// At the hub a revocation reaches IDs it never saw; the machine it
	// revoked may not register again, with any enrollment token.
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/machines/" + strings.Repeat("5a", 32) + "/revoke", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/client/register", cred: "Bearer " + authTok, want: 403,
		body: map[string]string{"machine_id": "doomed-machine-0123456789", "kernel": "6.1.0-18-amd64", "arch": "x86_64", "client_version": "1.0.0"}})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/machines/" + gone.MachinesRevoked[0], cred: admin, want: 200})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/machines/" + gone.MachinesRevoked[0], cred: admin, want: 404})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/machines/" + strings.Repeat("5a", 32), cred: admin, want: 200})

	// The newer patch withdrawn: the machine that applied it is offered the
	// older one with the hub's withdrawal, and the feed skips the newer one
	// with the hub's reason.
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches/" + digest2 + "/withdraw", cred: admin, want: 200})
	back := ck.do(call{node: hub, method: "GET", path: "/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64&applied=" + digest2, cred: machine, want: 200})
	has(t, "offer after a withdrawal", back, "signed.record", "withdrawal.record", "withdrawal.sig")
	if d := decode[struct{ Digest string }](t, back).Digest; d != digest {
		t.Errorf("offer after a withdrawal: digest %s, want %s", d, digest)
	}

	// Blobs.
	ck.do(call{node: hub, method: "GET", path: "/v1/blobs/" + digest, cred: machine, want: 200})
	ck.do(call{node: hub, method: "HEAD", path: "/v1/blobs/" + digest, cred: machine, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/blobs/" + digest, cred: admin, header: map[string]string{"Range": "bytes=0-9"}, want: 206})
	ck.do(call{node: hub, method: "GET", path: "/v1/blobs/" + digest, cred: "Bearer " + syncTok.Token, header: map[string]string{"If-None-Match": `"` + digest + `"`}, want: 304})
	ck.do(call{node: hub, method: "GET", path: "/v1/blobs/" + digest, want: 401, badRequest: true})

	// Sync: the feed, the link at the edge, hub keys.
	feed := ck.do(call{node: hub, method: "GET", path: "/v1/sync/feed?after=0&limit=100", cred: "Bearer " + syncTok.Token, want: 200})
	has(t, "feed", feed, "heartbeat.record", "heartbeat.sig")
	skipped := 0
	for i, e := range decode[struct {
		Events []struct {
			Skip    bool
			Because *federation.Envelope
		}
	}](t, feed).Events {
		if e.Skip {
			skipped++
			has(t, "feed", feed, fmt.Sprintf("events.%d.because.record", i), fmt.Sprintf("events.%d.because.sig", i))
		}
	}
	if skipped == 0 {
		t.Errorf("feed of tier edge: no skipped event for the withdrawn patch %s: %.3000s", digest2, feed)
	}
	ck.do(call{node: hub, method: "GET", path: "/v1/sync/feed?hub_after=0&wait=0s", cred: "Bearer " + syncTok.Token, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/sync/feed?limit=0", cred: "Bearer " + syncTok.Token, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "GET", path: "/v1/sync/hub-key", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/sync/mesh-key", cred: "Bearer " + syncTok.Token, want: 200})

	// Fleet reports: a push as a downstream link sends it, its replay,
	// one for another tier, and the listings over the subtree.
	now := time.Now().UTC()
	push := func(seq int64, tier string) map[string]any {
		return map[string]any{"v": 1, "node": "openapi-edge", "tier": tier, "seq": seq, "entries": []any{map[string]any{
			"node": "openapi-edge", "dc": "dc9", "as_of": now, "rows": true,
			"counts": []any{map[string]any{"kernel": "5.15.0-107.117-generic", "patch_version": "107.1", "state": "applied", "machines": 1}},
			"machines": []any{map[string]any{"id": strings.Repeat("ab", 32), "kernel": "5.15.0-107.117-generic", "arch": "x86_64",
				"state": "applied", "patch_version": "107.1", "last_seen": now}},
		}}}
	}
	ck.do(call{node: hub, method: "POST", path: "/v1/sync/report", cred: "Bearer " + syncTok.Token, body: push(1, "edge"), want: 204})
	ck.do(call{node: hub, method: "POST", path: "/v1/sync/report", cred: "Bearer " + syncTok.Token, body: push(1, "edge"), want: 409})
	ck.do(call{node: hub, method: "POST", path: "/v1/sync/report", cred: "Bearer " + syncTok.Token, body: push(2, "stable"), want: 403})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/reports/machines?dc=dc9&limit=10", cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/reports/machines?after=zz", cred: admin, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/reports/summary?tier=edge", cred: admin, want: 200})
	ck.do(call{node: edge, method: "GET", path: "/v1/sync/hub-key", want: 404})

	// Rollouts: dc1 (the hub's) and dc9 (the report's) are known.
	ro := decode[struct{ ID string }](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts", cred: admin, want: 201,
		body: map[string]any{"tier": "edge", "version": "107.1", "waves": "dc1:0s,dc9:1h:10%", "soak_seconds": 60}}))
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts", cred: admin, want: 409,
		body: map[string]any{"tier": "edge", "version": "107.1", "waves": "dc1:0s"}})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts", cred: admin, want: 400,
		body: map[string]any{"tier": "stable", "version": "107.1", "waves": "dc-nowhere:0s"}})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts", cred: admin, want: 400, badRequest: true,
		body: map[string]any{"tier": "stable", "version": "107.1", "waves": "dc1:0s", "soak_seconds": -1}})
	ck.do(call{node: edge, method: "POST", path: "/v1/admin/rollouts", cred: edgeAdmin, want: 409,
		body: map[string]any{"tier": "stable", "version": "107.1", "waves": "dc1:0s"}})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/rollouts?tier=edge", cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/rollouts/" + ro.ID, cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/rollouts/0123456789abcdef", cred: admin, want: 404})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts/" + ro.ID + "/halt", cred: admin, body: map[string]string{"reason": "openapi"}, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts/" + ro.ID + "/halt", cred: admin, want: 409})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts/" + ro.ID + "/resume", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts/XYZ/resume", cred: admin, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts/0123456789abcdef/abort", cred: admin, want: 404})
	meshtest.WaitFor(t, 30*time.Second, "the patch at the edge", func() error {
		ps, err := edge.TryPatches(t, nil)
		if err != nil || len(ps) != 1 {
			return fmt.Errorf("edge patches %v, %v", ps, err)
		}
		return nil
	})
	ck.do(call{node: edge, method: "POST", path: "/v1/admin/sync/trigger", cred: edgeAdmin, body: map[string]bool{"wait": true}, want: 200})
	ck.do(call{node: edge, method: "POST", path: "/v1/admin/sync/trigger", cred: edgeAdmin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/sync/trigger", cred: admin, want: 409})
	has(t, "edge sync status", ck.do(call{node: edge, method: "GET", path: "/v1/sync/status", cred: edgeAdmin, want: 200}),
		"links.0.stale", "links.0.heartbeat_time", "links.0.heartbeat_age_seconds", "links.0.heartbeat_hub_head")
	ck.do(call{node: hub, method: "GET", path: "/v1/sync/status", cred: admin, want: 200})

	// Trust, at the edge: the config's key and one pinned here.
	ck.do(call{node: edge, method: "GET", path: "/v1/admin/trust", cred: edgeAdmin, want: 200})
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	added := decode[struct{ ID string }](t, ck.do(call{node: edge, method: "POST", path: "/v1/admin/trust", cred: edgeAdmin,
		body: map[string]string{"key": federation.FormatPublicKey(pub)}, want: 201}))
	ck.do(call{node: edge, method: "GET", path: "/v1/admin/trust", cred: edgeAdmin, want: 200})
	ck.do(call{node: edge, method: "DELETE", path: "/v1/admin/trust/" + added.ID, cred: edgeAdmin, want: 204})
	ck.do(call{node: edge, method: "DELETE", path: "/v1/admin/trust/" + federation.KeyID(pub), cred: edgeAdmin, want: 404})

	// Topology, with gossip, once both nodes see each other.
	meshtest.WaitFor(t, 30*time.Second, "both nodes in the hub's gossip", func() error {
		g, err := hub.GossipView(t.Context())
		if err != nil || g.Members["alive"] != 2 {
			return fmt.Errorf("hub gossip %v, %v", g.Members, err)
		}
		return nil
	})
	ck.do(call{node: hub, method: "GET", path: "/v1/topology", cred: admin, want: 200})
	ck.do(call{node: edge, method: "GET", path: "/v1/topology", cred: edgeAdmin, want: 200})

	// The dashboard: its files, the session and CSRF token, the cookie
	// login and logout, and the view once and as events. The session
	// cookie holds a login's macaroon, so the one of POST /v1/admin/login
	// stands for it.
	ck.do(call{node: hub, method: "GET", path: "/", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/dashboard/", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/dashboard/app.js", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/dashboard/app.css", want: 200})
	ck.do(call{node: hub, method: "GET", path: "/dashboard/nothing.js", want: 404})
	csrf := decode[struct{ CSRF string }](t, ck.do(call{node: hub, method: "GET", path: "/v1/dashboard/session", want: 200})).CSRF
	withCSRF := map[string]string{"X-CSRF-Token": csrf, "Cookie": "patchmesh_csrf=" + csrf}
	dashLogin := map[string]string{"user": meshtest.AdminUser, "password": meshtest.AdminPassword}
	csrf = decode[struct{ CSRF string }](t, ck.do(call{node: hub, method: "POST", path: "/v1/dashboard/login", header: withCSRF, body: dashLogin, want: 200})).CSRF
	ck.do(call{node: hub, method: "POST", path: "/v1/dashboard/login", header: map[string]string{"Cookie": "patchmesh_csrf=" + csrf}, body: dashLogin, want: 403, badRequest: true})
	ck.do(call{node: hub, method: "POST", path: "/v1/dashboard/login", header: map[string]string{"X-CSRF-Token": csrf, "Cookie": "patchmesh_csrf=" + csrf},
		body: map[string]string{"user": meshtest.AdminUser, "password": "wrong"}, want: 401})
	session := map[string]string{"Cookie": "patchmesh_session=" + login.Macaroon}
	ck.do(call{node: hub, method: "GET", path: "/v1/dashboard/session", header: session, want: 200})
	// The view's fleet is the summary of the report pushed above, and its
	// rollouts the one planned above, checked against the description as
	// every answer is.
	view := decode[struct {
		Fleet *struct {
			Machines int64
			Nodes    []struct{ Node string }
		}
		Rollouts []struct {
			ID         string
			WaveStatus []struct{ State string } `json:"wave_status"`
		}
		Unavailable []string
	}](t, ck.do(call{node: hub, method: "GET", path: "/v1/dashboard/snapshot", header: session, want: 200}))
	if view.Fleet == nil || view.Fleet.Machines < 1 || !slices.ContainsFunc(view.Fleet.Nodes, func(n struct{ Node string }) bool { return n.Node == "openapi-edge" }) {
		t.Errorf("the hub's dashboard view: fleet %+v, want the machine openapi-edge reported", view.Fleet)
	}
	if len(view.Rollouts) != 1 || view.Rollouts[0].ID != ro.ID || len(view.Rollouts[0].WaveStatus) != 2 || len(view.Unavailable) != 0 {
		t.Errorf("the hub's dashboard view: rollouts %+v, unavailable %v; want %s with its 2 waves, nothing unavailable", view.Rollouts, view.Unavailable, ro.ID)
	}
	ck.do(call{node: edge, method: "GET", path: "/v1/dashboard/snapshot", cred: edgeAdmin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/dashboard/snapshot", want: 401})
	ck.do(call{node: hub, method: "GET", path: "/v1/dashboard/events?limit=1", cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/dashboard/events?limit=0", cred: admin, want: 400, badRequest: true})
	ck.do(call{node: hub, method: "POST", path: "/v1/dashboard/logout", header: map[string]string{"X-CSRF-Token": csrf, "Cookie": "patchmesh_csrf=" + csrf}, want: 204})

	// Peer blobs are served on the peer listener only; the edge has none.
	ck.do(call{node: edge, method: "GET", path: "/v1/peer/blobs/" + digest, cred: machine, want: 404})
	ck.do(call{node: edge, method: "HEAD", path: "/v1/peer/blobs/" + digest, want: 404})
	ck.joinAndPeer(phub)

	// A node's admission taken back.
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/nodes/edge", cred: admin, want: 204})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/nodes/edge", cred: admin, want: 404})

	// Storage, then the end of a patch: withdrawn, then removed.
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/storage", cred: admin, want: 200})
	ck.pageThrough(hub, admin, "/v1/admin/storage")
	wantField(t, "storage after a machines cursor", ck.do(call{node: hub, method: "GET", path: "/v1/admin/storage?after=" + machinesNext, cred: admin, want: 400}), "after")
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/storage/refresh", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/patches/" + digest + "/withdraw", cred: admin, want: 200})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/patches/" + digest, cred: admin, want: 204})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/patches", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/rollouts/" + ro.ID + "/abort", cred: admin, want: 200})

	// Webhooks and the audit trail.
	hook := decode[struct{ ID string }](t, ck.do(call{node: hub, method: "POST", path: "/v1/admin/webhooks", cred: admin, want: 201,
		body: map[string]any{"url": "https://hooks.example/patchmesh", "events": []string{"node.down", "sync.failing"}, "secret": "openapi-test-secret-0123"}}))
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/webhooks", cred: admin, want: 400, badRequest: true,
		body: map[string]any{"url": "https://hooks.example/", "events": []string{"patch.deleted"}, "secret": "openapi-test-secret-0123"}})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/webhooks", cred: admin, want: 200})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/webhooks/" + hook.ID + "/test", cred: admin, want: 202})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/webhooks/" + hook.ID + "/deliveries?limit=10", cred: admin, want: 200})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/webhooks/" + hook.ID, cred: admin, want: 204})
	ck.do(call{node: hub, method: "DELETE", path: "/v1/admin/webhooks/" + hook.ID, cred: admin, want: 404})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/audit?limit=5", cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/audit?since=2026-01-01T00:00:00Z&after=3", cred: admin, want: 200})
	ck.do(call{node: hub, method: "GET", path: "/v1/admin/audit?since=yesterday", cred: admin, want: 400, badRequest: true})

	// Strict edges: a JSON endpoint sent another type; a key named twice.
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/tiers", cred: admin, body: []byte(`{"name":"typed"}`), want: 415, badRequest: true})
	ck.do(call{node: hub, method: "POST", path: "/v1/admin/tiers", cred: admin, body: []byte(`{"name":"twice","name":"again"}`),
		header: map[string]string{"Content-Type": "application/json"}, want: 400})

	// Wrong logins from one address: delayed with 429 once the free
	// failures are spent (auth.login_free_failures, default 3).
	var throttled bool
	for range 6 {
		body := ck.do(call{node: hub, method: "POST", path: "/v1/admin/login", cred: "Basic " + base64.StdEncoding.EncodeToString([]byte("nobody:wrong")), want: -1})
		if throttled = strings.Contains(string(body), `"too_many_requests"`); throttled {
			break
		}
	}
	if !throttled {
		t.Errorf("six wrong logins in a row: want a 429, got none")
	}

	// Logout everywhere, last: the edge admin's own sessions end, its
	// macaroon with them.
	ck.do(call{node: edge, method: "DELETE", path: "/v1/admin/sessions/nobody", cred: edgeAdmin, want: 404})
	ck.do(call{node: edge, method: "DELETE", path: "/v1/admin/sessions/" + meshtest.AdminUser, cred: edgeAdmin, want: 204})
	ck.do(call{node: edge, method: "GET", path: "/v1/admin/tiers", cred: edgeAdmin, want: 401})

	// Every documented operation must have been seen working.
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if op := strings.ToUpper(method) + " " + path; !ck.done[op] {
				t.Errorf("%s: %s was not exercised against a live node", specFile, op)
			}
		}
	}
}

// TestKernelSchemaIsTheGrammar checks that the description's Kernel schema
// (pattern and maxLength, as a validator applies them) accepts exactly the
// releases catalog.ValidKernel does: the documented forms, near misses, and
// strings drawn from the grammar's alphabet.
func TestKernelSchemaIsTheGrammar(t *testing.T) {
	doc := loadSpec(t)
	ref := doc.Components.Schemas["Kernel"]
	if ref == nil || ref.Value == nil || ref.Value.Pattern == "" || ref.Value.MaxLength == nil {
		t.Fatalf("%s: the Kernel schema has no pattern or maxLength", specFile)
	}
	schema := ref.Value
	agree := func(k string) {
		t.Helper()
		specOK := schema.VisitJSON(k) == nil
		codeOK := catalog.ValidKernel(k) == nil
		if specOK != codeOK {
			t.Errorf("kernel %q: %s accepts it: %v, catalog.ValidKernel: %v", k, specFile, specOK, codeOK)
		}
	}
	cases := []string{
		"5.15.0-107-generic", "5.15.0-107.117-generic", "5.15.0-107.117~20.04.1-generic", "6.1.0-18-amd64",
		"6.5.6-300.fc39.x86_64", "5.14.0-362.8.1.el9_3.x86_64", "5.15.146.1-microsoft-standard-WSL2",
		"6.1.21-v8+", "6.9.0-rc1", "6.1.0", "6.1.0+", "6.1.0++", "6.1.0-", "6.1.0-a-", "6.1.0~", "6.1.0.",
		"6.1", "6", "", "v6.1.0", "6.1.0 ", " 6.1.0", "6.1.0-ü", "6.1.0/x", "12345.1.0", "1.12345.0",
		"1.1.1234567", "1.1.123456", "6.1.0--x", "6.1.0-a+b", "6.1.0\n", "6..1.0", "6.1.0-generic\x00",
		"6.1.0-" + strings.Repeat("a", 58), "6.1.0-" + strings.Repeat("a", 59),
	}
	for _, k := range cases {
		agree(k)
	}
	// Strings drawn from the grammar's alphabet and a few others, with a
	// fixed seed so that a failure repeats.
	const alphabet = "0123456789..--+_~aZ/ "
	r := mathrand.New(mathrand.NewPCG(1, 2))
	for range 20000 {
		b := []byte("5.15.0")
		if r.IntN(4) == 0 {
			b = b[:0]
		}
		for range r.IntN(70) {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
		agree(string(b))
	}
}

// joinAndPeer exercises the join (a token made at h, the exchange on its
// peer listener with a fresh node key) and then the peer blob routes with
// the key the join admitted.
func (ck *checker) joinAndPeer(h *meshtest.Node) {
	t := ck.t
	t.Helper()
	admin := h.Admin(t)
	tok := decode[struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}](t, ck.do(call{node: h, method: "POST", path: "/v1/admin/nodes/join-tokens", cred: admin, want: 201,
		body: map[string]any{"name": "joiner", "valid_for": "10m"}}))
	ck.do(call{node: h, method: "POST", path: "/v1/admin/nodes/join-tokens", cred: admin, want: 400, body: map[string]any{"name": "x", "valid_for": "forever"}})
	ck.do(call{node: h, method: "GET", path: "/v1/admin/nodes/join-tokens", cred: admin, want: 200})
	jt, err := federation.ParseJoinToken(tok.Token)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := federation.NodeCertificate(key, "joiner", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	peer := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: federation.PeerClientTLS(cert, nil, jt.HubKey)}}
	nonce := "openapi-join-nonce-0123456789abcdef"
	ch := decode[federation.JoinChallenge](t, ck.do(call{node: h, base: h.PeerURL, client: peer, method: "POST", path: "/v1/join/start", want: 200,
		body: federation.JoinStart{Token: jt.ID, Nonce: nonce}}))
	ck.do(call{node: h, base: h.PeerURL, client: peer, method: "POST", path: "/v1/join/start", want: 401,
		body: federation.JoinStart{Token: "ffffffffffffffff", Nonce: nonce}})
	mac := federation.JoinMAC(federation.JoinMACKey(jt.Secret), federation.JoinRoleNode, jt.ID, nonce, ch.Nonce,
		federation.KeyID(key.Public().(ed25519.PublicKey)), jt.HubKey)
	ck.do(call{node: h, base: h.PeerURL, client: peer, method: "POST", path: "/v1/join/finish", want: 200,
		body: federation.JoinFinish{Session: ch.Session, MAC: mac, URL: "http://127.0.0.1:1"}})
	ck.do(call{node: h, base: h.PeerURL, client: peer, method: "POST", path: "/v1/join/finish", want: 401,
		body: federation.JoinFinish{Session: ch.Session, MAC: mac}})

	content := bytes.Repeat([]byte("peer blob "), 100)
	var p struct{ Digest string }
	q := url.Values{"digest": {meshtest.Digest(content)}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"},
		"version": {"1"}, "size": {strconv.Itoa(len(content))}}
	h.AdminCall(t, http.MethodPost, "/v1/admin/patches?"+q.Encode(), content, &p)
	ck.do(call{node: h, base: h.PeerURL, client: peer, method: "GET", path: "/v1/peer/blobs/" + p.Digest, want: 200})
	ck.do(call{node: h, base: h.PeerURL, client: peer, method: "HEAD", path: "/v1/peer/blobs/" + p.Digest, want: 200})
	ck.do(call{node: h, base: h.PeerURL, client: peer, method: "GET", path: "/v1/peer/blobs/sha256:" + strings.Repeat("0", 64), want: 404})
}
