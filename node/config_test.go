package node

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/patchmesh/patchmesh/auth"
)

// A real bcrypt hash (of "secret", cost 4) for configs that list admins.
const testHash = "$2a$04$5ShHhWF9gEvJTRUc0Ywdsu0RXEcRWjW6I4X.k5A1NkAW3/b1wIWZO"

// normalize makes an empty admin list compare equal to a missing one.
func normalize(c Config) Config {
	if len(c.Auth.Admins) == 0 {
		c.Auth.Admins = nil
	}
	return c
}

func TestExamplesLoadAndValidate(t *testing.T) {
	for _, name := range []string{"patchmesh.yaml", "postgres.yaml"} {
		t.Run(name, func(t *testing.T) {
			c, err := Load(filepath.Join("..", "examples", name))
			if err != nil {
				t.Fatalf("Load: want the example to load, got %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: want the example to be valid, got %v", err)
			}
		})
	}
}

// The annotated example claims to show every default; this keeps it true.
func TestExampleShowsTheDefaults(t *testing.T) {
	c, err := Load(filepath.Join("..", "examples", "patchmesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := normalize(c), Defaults(); !reflect.DeepEqual(got, want) {
		t.Fatalf("examples/patchmesh.yaml differs from Defaults():\nfile:     %+v\ndefaults: %+v", got, want)
	}
}

// Every option must appear in the annotated example, at least commented.
func TestExampleMentionsEveryOption(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "examples", "patchmesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, f := range envFields() {
		sec, key, _ := strings.Cut(f.path, ".")
		if !strings.Contains(text, "\n"+sec+":") || !strings.Contains(text, " "+key+":") {
			t.Errorf("examples/patchmesh.yaml: want option %s documented, it is missing", f.path)
		}
	}
}

func TestDefaultsAreValidAndRoundTrip(t *testing.T) {
	d := Defaults()
	if err := d.Validate(); err != nil {
		t.Fatalf("Defaults().Validate(): want nil, got %v", err)
	}
	b, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := back.decode(b); err != nil {
		t.Fatalf("decode marshalled defaults: %v\n%s", err, b)
	}
	if got := normalize(back); !reflect.DeepEqual(got, d) {
		t.Fatalf("round trip: want %+v, got %+v\nyaml:\n%s", d, got, b)
	}
	if !strings.Contains(string(b), "macaroon_ttl: 240h\n") {
		t.Errorf("want durations written as Go durations (macaroon_ttl: 240h), got:\n%s", b)
	}
}

func TestLoadLayersFileOverDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("server:\n  listen: 127.0.0.1:9999\nlog:\n  format: text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Server.Listen = "127.0.0.1:9999"
	want.Log.Format = "text"
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("want defaults with the file's two options, got %+v", c)
	}
}

func TestLoadEmptyFileIsDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("want an empty file accepted, got %v", err)
	}
	if !reflect.DeepEqual(c, Defaults()) {
		t.Fatalf("want Defaults(), got %+v", c)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown option", "server:\n  listn: 127.0.0.1:1\n", "listn"},
		{"unknown section", "serve:\n  listen: 127.0.0.1:1\n", "serve"},
		{"malformed duration", "server:\n  idle_timeout: soon\n", "soon"},
		{"wrong type", "store:\n  max_conns: many\n", "many"},
		{"not yaml", "server: [\n", "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error mentioning %q, got %v", tt.want, err)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: want an error wrapping os.ErrNotExist, got %v", err)
	}
}

func TestLoadErrorsNameTheYAMLKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string // the whole message after "config PATH: "
	}{
		{"misspelt option", "server:\n  listn: 127.0.0.1:1\n",
			"server.listn (line 2): unknown option; server takes listen, read_header_timeout, idle_timeout, max_idle_conns, shutdown_timeout, tls_cert, tls_key, trusted_proxies, admin_networks, metrics_token_file, peer_listen, peer_advertise_url"},
		{"misspelt section", "serve:\n  listen: 127.0.0.1:1\n",
			"serve (line 1): unknown option; the file takes node, server, store, blobs, auth, limits, governor, log, sync, gossip, webhooks, reports, rollouts, dashboard"},
		{"malformed duration", "server:\n  idle_timeout: soon\n",
			`server.idle_timeout (line 2): want a duration such as 30s or 1h30m, got "soon"`},
		{"duration without unit", "sync:\n  wait: 30\n",
			`sync.wait (line 2): want a duration such as 30s or 1h30m, got "30"`},
		{"word for a number", "store:\n  max_conns: many\n",
			`store.max_conns (line 2): want a whole number that fits 32 bits, got "many"`},
		{"one key for a list", "sync:\n  trust: ed25519:abc\n",
			`sync.trust (line 2): want a list of strings, such as [a, b], got "ed25519:abc"`},
		{"section given a value", "gossip: on\n",
			`gossip: line 1: want a section of options, got "on"`},
		{"list where a string goes", "node:\n  name: [a, b]\n",
			"node.name (line 2): want a string, got a list"},
		{"misspelt option deep in a list", "sync:\n  links:\n    - tier: stable\n      upstreams:\n        - url: http://127.0.0.1:1\n          tokn: x\n",
			"sync.links[0].upstreams[0].tokn (line 6): unknown option; sync.links[0].upstreams[0] takes url, token, token_file, allow_http"},
		{"option given twice", "log:\n  level: info\n  level: debug\n",
			"log.level (line 3): given twice"},
		{"not a mapping", "- a\n- b\n",
			"line 1: want a YAML mapping of sections (node:, server:, store:, …), got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			want := "config " + path + ": " + tt.want
			if err == nil || err.Error() != want {
				t.Fatalf("Load:\n got %v\nwant %s", err, want)
			}
		})
	}
}

// envValue returns a valid, non-default environment value for a field of
// type typ, and the value ApplyEnv should then store.
func envValue(t *testing.T, typ reflect.Type, i int) (string, any) {
	t.Helper()
	switch {
	case typ == durationType:
		d := time.Duration(i+1) * time.Minute
		return d.String(), d
	case typ == adminsType:
		return "alice:" + testHash + ", bob:" + testHash,
			[]auth.Admin{{Name: "alice", PasswordHash: testHash}, {Name: "bob", PasswordHash: testHash}}
	case typ.Kind() == reflect.String:
		s := "value-" + strings.Repeat("x", i+1)
		return s, s
	case typ == stringsType:
		return " a, b ,,c", []string{"a", "b", "c"}
	case typ.Kind() == reflect.Bool:
		return strconv.FormatBool(i%2 == 0), i%2 == 0
	case typ.Kind() == reflect.Int, typ.Kind() == reflect.Int32, typ.Kind() == reflect.Int64:
		v := reflect.New(typ).Elem()
		v.SetInt(int64(1000 + i))
		return strconv.Itoa(1000 + i), v.Interface()
	}
	t.Fatalf("no test value for option type %s: teach envValue and setField about it", typ)
	return "", nil
}

// Walks Config by reflection, independently of envFields, so that an option
// without an environment variable fails here.
func TestEveryOptionHasAnEnvOverride(t *testing.T) {
	vars := map[string]bool{}
	for _, f := range envFields() {
		if vars[f.name] {
			t.Errorf("two options share %s", f.name)
		}
		vars[f.name] = true
	}

	ct := reflect.TypeFor[Config]()
	n := 0
	for i := range ct.NumField() {
		sec := ct.Field(i)
		if sec.Type.Kind() != reflect.Struct {
			t.Fatalf("Config.%s: want a section struct, got %s", sec.Name, sec.Type)
		}
		for j := range sec.Type.NumField() {
			f := sec.Type.Field(j)
			if f.Tag.Get("env") == "-" {
				continue // structured, file-only options say so in their tag
			}
			secTag, fTag := sec.Tag.Get("yaml"), f.Tag.Get("yaml")
			if secTag == "" || fTag == "" {
				t.Errorf("Config.%s.%s: want a yaml tag, it has none", sec.Name, f.Name)
				continue
			}
			name := "PATCHMESH_" + strings.ToUpper(secTag+"_"+fTag)
			if !vars[name] {
				t.Errorf("Config.%s.%s: want environment variable %s, ApplyEnv does not read it", sec.Name, f.Name, name)
				continue
			}
			value, want := envValue(t, f.Type, n)
			n++
			c := Defaults()
			env := map[string]string{name: value}
			if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
				t.Errorf("%s=%q: want accepted, got %v", name, value, err)
				continue
			}
			got := reflect.ValueOf(c).Field(i).Field(j).Interface()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s=%q: want %s.%s = %v, got %v", name, value, secTag, fTag, want, got)
			}
		}
	}
	if n != len(vars) {
		t.Errorf("want one variable per option (%d options), got %d variables", n, len(vars))
	}
}

func TestApplyEnvRejectsMalformedValues(t *testing.T) {
	tests := []struct {
		name, value string
	}{
		{"PATCHMESH_SERVER_IDLE_TIMEOUT", "soon"},
		{"PATCHMESH_SERVER_SHUTDOWN_TIMEOUT", "30"},
		{"PATCHMESH_STORE_MAX_CONNS", "many"},
		{"PATCHMESH_STORE_MAX_CONNS", "99999999999"},
		{"PATCHMESH_LIMITS_MAX_UPLOAD_BYTES", "1.5"},
		{"PATCHMESH_GOVERNOR_MAX_QUEUE", "-"},
		{"PATCHMESH_AUTH_ADMINS", "alice"},
		{"PATCHMESH_AUTH_ADMINS", "alice:" + testHash + ",:nohashname"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			c := Defaults()
			env := map[string]string{tt.name: tt.value, "PATCHMESH_SERVER_LISTEN": "127.0.0.1:1"}
			err := c.ApplyEnv(func(k string) string { return env[k] })
			if err == nil || !strings.Contains(err.Error(), tt.name) {
				t.Fatalf("want an error naming %s, got %v", tt.name, err)
			}
			if !reflect.DeepEqual(c, Defaults()) {
				t.Fatalf("want the config unchanged after a rejected environment, got %+v", c)
			}
		})
	}
}

func TestApplyEnvOverridesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("server:\n  listen: 127.0.0.1:1111\n  idle_timeout: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PATCHMESH_SERVER_LISTEN": "127.0.0.1:2222", "PATCHMESH_SERVER_IDLE_TIMEOUT": ""}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != "127.0.0.1:2222" {
		t.Errorf("want the environment's listen 127.0.0.1:2222 over the file's, got %s", c.Server.Listen)
	}
	if c.Server.IdleTimeout != time.Minute {
		t.Errorf("want an empty variable to leave the file's idle_timeout 1m, got %v", c.Server.IdleTimeout)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"bad role", func(c *Config) { c.Node.Role = "leader" }, "node.role"},
		{"bad name", func(c *Config) { c.Node.Name = "my node" }, "node.name"},
		{"empty data dir", func(c *Config) { c.Node.DataDir = "" }, "node.data_dir"},
		{"listen without port", func(c *Config) { c.Server.Listen = "127.0.0.1" }, "server.listen"},
		{"listen bad port", func(c *Config) { c.Server.Listen = "127.0.0.1:http-ish" }, "server.listen"},
		{"zero timeout", func(c *Config) { c.Server.ShutdownTimeout = 0 }, "server.shutdown_timeout"},
		{"cert without key", func(c *Config) { c.Server.TLSCert = "cert.pem" }, "tls_key"},
		{"unknown store", func(c *Config) { c.Store.Driver = "mysql" }, "store.driver"},
		{"postgres without dsn", func(c *Config) { c.Store.Driver = DriverPostgres }, "store.dsn"},
		{"min over max", func(c *Config) {
			c.Store.Driver, c.Store.DSN, c.Store.MinConns = DriverPostgres, "postgres://h/db", 20
		}, "store.min_conns"},
		{"unknown blobs", func(c *Config) { c.Blobs.Driver = "s4" }, "blobs.driver"},
		{"unknown gossip compression", func(c *Config) { c.Gossip.Compression = "lzw" }, "gossip.compression"},
		{"postgres blobs on sqlite", func(c *Config) { c.Blobs.Driver = DriverPostgres }, "needs store.driver postgres"},
		{"tiny chunks", func(c *Config) {
			c.Store.Driver, c.Store.DSN, c.Blobs.Driver, c.Blobs.ChunkSize = DriverPostgres, "postgres://h/db", DriverPostgres, 10
		}, "blobs.chunk_size"},
		{"admin hash not bcrypt", func(c *Config) {
			c.Auth.Admins = []auth.Admin{{Name: "alice", PasswordHash: "hunter2"}}
		}, "auth.admins[0].password_hash"},
		{"admin listed twice", func(c *Config) {
			c.Auth.Admins = []auth.Admin{{Name: "alice", PasswordHash: testHash}, {Name: "alice", PasswordHash: testHash}}
		}, "listed twice"},
		{"zero macaroon ttl", func(c *Config) { c.Auth.MacaroonTTL = 0 }, "auth.macaroon_ttl"},
		{"bcrypt cost", func(c *Config) { c.Auth.BcryptCost = 40 }, "bcrypt_cost"},
		{"zero body limit", func(c *Config) { c.Limits.MaxBodyBytes = 0 }, "limits.max_body_bytes"},
		{"zero in flight", func(c *Config) { c.Governor.MaxInFlight = 0 }, "governor.max_in_flight"},
		{"negative queue", func(c *Config) { c.Governor.MaxQueue = -1 }, "governor.max_queue"},
		{"negative mmap size", func(c *Config) { c.Store.SQLiteMmapSize = -1 }, "store.sqlite_mmap_size"},
		{"mmap size past SQLite's ceiling", func(c *Config) { c.Store.SQLiteMmapSize = 4 << 30 }, "store.sqlite_mmap_size"},
		{"zero admin lane", func(c *Config) { c.Governor.AdminMaxInFlight = 0 }, "governor.admin_max_in_flight"},
		{"negative admin queue", func(c *Config) { c.Governor.AdminMaxQueue = -1 }, "governor.admin_max_queue"},
		{"bad admin network", func(c *Config) { c.Server.AdminNetworks = []string{"lan"} }, "server.admin_networks"},
		{"bad trusted proxy", func(c *Config) { c.Server.TrustedProxies = []string{"10.0.0.0/40"} }, "server.trusted_proxies"},
		{"zero free failures", func(c *Config) { c.Auth.LoginFreeFailures = 0 }, "auth.login_free_failures"},
		{"lockout before delays", func(c *Config) { c.Auth.LoginLockoutAfter = 2 }, "auth.login_lockout_after"},
		{"zero login delay", func(c *Config) { c.Auth.LoginDelay = 0 }, "auth.login_delay"},
		{"zero bcrypt pool", func(c *Config) { c.Auth.BcryptConcurrency = 0 }, "auth.bcrypt_concurrency"},
		{"bad level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"bad format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"plain http upstream", func(c *Config) {
			c.Node.Role = RoleEdge
			c.Sync.Links = []LinkConfig{{Tier: "stable", Upstreams: []UpstreamConfig{{URL: "http://hub.example:8080", Token: "pms_x"}}}}
		}, "sync.links[0].upstreams[0].url: \"http://hub.example:8080\" is plain http"},
		{"stale bound under the wait", func(c *Config) {
			c.Node.Role = RoleEdge
			c.Sync.Links = []LinkConfig{{Tier: "stable", Upstreams: []UpstreamConfig{{URL: "https://hub.example", Token: "pms_x"}}}}
			c.Sync.StaleAfter = c.Sync.Wait
		}, "sync.stale_after"},
		{"zero heartbeat", func(c *Config) { c.Sync.HeartbeatEvery = 0 }, "sync.heartbeat_every"},
		{"malformed endorsement", func(c *Config) { c.Sync.Endorsements = []string{"pmke_nope"} }, "sync.endorsements[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error mentioning %q, got %v", tt.want, err)
			}
		})
	}
}

func TestValidateAllowsPlainHTTPOnlyWhenAsked(t *testing.T) {
	for name, allow := range map[string]func(*Config){
		"on the upstream": func(c *Config) { c.Sync.Links[0].Upstreams[0].AllowHTTP = true },
		"for every link":  func(c *Config) { c.Sync.AllowHTTP = true },
	} {
		c := Defaults()
		c.Node.Role = RoleEdge
		c.Sync.Links = []LinkConfig{{Tier: "stable", Upstreams: []UpstreamConfig{{URL: "http://127.0.0.1:8080", Token: "pms_x"}}}}
		allow(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("http allowed %s: want valid, got %v", name, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Defaults()
	c.Node.Role = "leader"
	c.Log.Format = "xml"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "node.role") || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("want both node.role and log.format reported, got %v", err)
	}
}

func TestDefaultDataDir(t *testing.T) {
	home := func() (string, error) { return "/home/ann", nil }
	noHome := func() (string, error) { return "", errors.New("no home") }
	tests := []struct {
		name   string
		env    map[string]string
		home   func() (string, error)
		system bool
		want   string
	}{
		{"explicit", map[string]string{"PATCHMESH_DATA_DIR": "/srv/pm", "XDG_DATA_HOME": "/x"}, home, true, "/srv/pm"},
		{"xdg", map[string]string{"XDG_DATA_HOME": "/x"}, home, true, "/x/patchmesh"},
		{"system dir exists", nil, home, true, "/var/lib/patchmesh"},
		{"home", nil, home, false, "/home/ann/.local/share/patchmesh"},
		{"nothing", nil, noHome, false, "patchmesh-data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := defaultDataDir(func(k string) string { return tt.env[k] }, tt.home,
				func(p string) bool { return tt.system && p == systemDataDir })
			if got != tt.want {
				t.Fatalf("want %s, got %s", tt.want, got)
			}
		})
	}
}

func TestDerivedPathsFollowDataDir(t *testing.T) {
	c := Defaults()
	c.Node.DataDir = "/d"
	if got := c.StorePath(); got != "/d/patchmesh.db" {
		t.Errorf("StorePath: want /d/patchmesh.db, got %s", got)
	}
	if got := c.BlobPath(); got != "/d/blobs" {
		t.Errorf("BlobPath: want /d/blobs, got %s", got)
	}
	c.Store.Path, c.Blobs.Path = "/db/pm.db", "/b"
	if c.StorePath() != "/db/pm.db" || c.BlobPath() != "/b" {
		t.Errorf("want explicit paths kept, got %s and %s", c.StorePath(), c.BlobPath())
	}
}

func TestRedactedDSNHidesPasswords(t *testing.T) {
	tests := []struct{ dsn, secret, keep string }{
		{"postgres://pm:hunter2@db:5432/pm?sslmode=disable", "hunter2", "db:5432/pm"},
		{"postgres://pm@db/pm?password=hunter2&sslmode=disable", "hunter2", "sslmode=disable"},
		{"host=db user=pm password=hunter2 dbname=pm", "hunter2", "dbname=pm"},
		{"host=db password='hun ter2' dbname=pm", "hun ter2", "dbname=pm"},
	}
	for _, tt := range tests {
		c := Defaults()
		c.Store.DSN = tt.dsn
		got := c.RedactedDSN()
		if strings.Contains(got, tt.secret) || !strings.Contains(got, tt.keep) {
			t.Errorf("RedactedDSN(%q): want %q hidden and %q kept, got %q", tt.dsn, tt.secret, tt.keep, got)
		}
	}
}

func TestEnvVarsListsEveryOption(t *testing.T) {
	got := EnvVars()
	if len(got) != len(envFields()) {
		t.Fatalf("want %d variables, got %d", len(envFields()), len(got))
	}
	want := "PATCHMESH_STORE_DSN (store.dsn)"
	for _, v := range got {
		if v == want {
			return
		}
	}
	t.Fatalf("want %q listed, got %v", want, got)
}

func TestDefaultsWithEnvTakesTheDataDirFromGetenv(t *testing.T) {
	c := DefaultsWithEnv(func(k string) string { return map[string]string{"PATCHMESH_DATA_DIR": "/srv/pm"}[k] })
	if c.Node.DataDir != "/srv/pm" {
		t.Fatalf("want data dir /srv/pm from PATCHMESH_DATA_DIR, got %s", c.Node.DataDir)
	}
}

func TestLoadFileLeavesConfigUnchangedOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("server:\n  listen: 127.0.0.1:1\n  bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.Auth.Admins = []auth.Admin{{Name: "alice", PasswordHash: testHash}}
	before := c
	if err := c.LoadFile(path); err == nil {
		t.Fatal("want an error for the unknown key bogus, got nil")
	}
	if !reflect.DeepEqual(c, before) {
		t.Fatalf("want the config unchanged, got %+v", c)
	}
}

func TestDefaultNameIsHostAndPort(t *testing.T) {
	tests := []struct{ host, port, want string }{
		{"web-3", "8080", "web-3-8080"},
		{"web-3.dc1.example.com", "8443", "web-3-8443"},
		{"", "8080", "patchmesh-8080"},
		{"my host!", "80", "my-host--80"},
		{strings.Repeat("h", 80), "65535", strings.Repeat("h", 57) + "-65535"},
	}
	for _, tt := range tests {
		got := DefaultName(tt.host, tt.port)
		if got != tt.want {
			t.Errorf("DefaultName(%q, %q) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
		if !nodeNameRE.MatchString(got) {
			t.Errorf("DefaultName(%q, %q) = %q breaks node.name's rule", tt.host, tt.port, got)
		}
	}
}

func TestMetricsTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, file, want string
		ok               bool
	}{
		{"unset", "", "", true},
		{"a token, trailing newline", write("good", "scrape-token-0123456789\n"), "scrape-token-0123456789", true},
		{"too short", write("short", "abc\n"), "", false},
		{"missing file", filepath.Join(dir, "nope"), "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Server.MetricsTokenFile = c.file
			got, err := cfg.metricsToken()
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("want %q (ok=%v), got %q, %v", c.want, c.ok, got, err)
			}
		})
	}
}

// A SQLite file inside the locked data directory is a sole writer's, and
// PostgreSQL tells every node of the others' writes (its polled store
// generation): their caches may hold entries long; a SQLite file anywhere
// else gets the packages' 1s bound. Only a node that owns its embedded
// store hears of every change to it, so only its webhook dispatcher may
// rest on being woken: PostgreSQL's polled generation invalidates caches
// but wakes no dispatcher.
func TestStoreOwnershipSetsCacheAgeAndWakeUps(t *testing.T) {
	for _, c := range []struct {
		name, driver, path string
		cacheAge, recheck  time.Duration
		owns               bool
	}{
		{"default sqlite", DriverSQLite, "", soleWriterCacheMaxAge, soleWriterRecheck, true},
		{"sqlite in the data dir", DriverSQLite, "/srv/pm/sub/meta.db", soleWriterCacheMaxAge, soleWriterRecheck, true},
		{"sqlite elsewhere", DriverSQLite, "/srv/shared/meta.db", 0, metaRecheck, false},
		{"sqlite next to the data dir", DriverSQLite, "/srv/pm-other/meta.db", 0, metaRecheck, false},
		{"postgres", DriverPostgres, "", soleWriterCacheMaxAge, soleWriterRecheck, false},
	} {
		cfg := Defaults()
		cfg.Node.DataDir = "/srv/pm"
		cfg.Store.Driver, cfg.Store.Path = c.driver, c.path
		if got := ownsEmbeddedStore(cfg); got != c.owns {
			t.Errorf("%s: owns the store: want %v, got %v", c.name, c.owns, got)
		}
		if got := cacheMaxAge(cfg); got != c.cacheAge {
			t.Errorf("%s: want %v, got %v", c.name, c.cacheAge, got)
		}
		if got := storeRecheck(cfg); got != c.recheck {
			t.Errorf("%s: store recheck: want %v, got %v", c.name, c.recheck, got)
		}
		cfg.Store.CacheMaxAge = time.Minute
		if got := cacheMaxAge(cfg); got != time.Minute {
			t.Errorf("%s with store.cache_max_age 1m: want 1m, got %v", c.name, got)
		}
	}
}
