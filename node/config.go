package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob/pgblob"
	"github.com/patchmesh/patchmesh/blob/s3blob"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/rollout"
	"github.com/patchmesh/patchmesh/store/sqlstore"
	"github.com/patchmesh/patchmesh/webhook"
)

// Config is everything a node needs to start. The zero value is not
// usable: start from Defaults, then layer a file (Load), the environment
// (ApplyEnv) and flags on top, then Validate.
//
// Every field carries a yaml tag; ApplyEnv derives one environment variable
// per field from those tags, so a new field is overridable from the
// environment without further work.
type Config struct {
	Node     IdentityConfig `yaml:"node"`
	Server   ServerConfig   `yaml:"server"`
	Store    StoreConfig    `yaml:"store"`
	Blobs    BlobsConfig    `yaml:"blobs"`
	Auth     AuthConfig     `yaml:"auth"`
	Limits   LimitsConfig   `yaml:"limits"`
	Governor GovernorConfig `yaml:"governor"`
	Log      LogConfig      `yaml:"log"`
	Sync     SyncConfig     `yaml:"sync"`
	Gossip   GossipConfig   `yaml:"gossip"`
	Webhooks WebhooksConfig `yaml:"webhooks"`
	Reports  ReportsConfig  `yaml:"reports"`
	Rollouts RolloutsConfig `yaml:"rollouts"`
	// Dashboard tunes the web dashboard every node serves at /dashboard/.
	Dashboard DashboardConfig `yaml:"dashboard"`
}

// DashboardConfig tunes the web dashboard.
type DashboardConfig struct {
	// PublicRead lets anyone who reaches the node read the dashboard's
	// view (topology, sync status, patches and which nodes hold them)
	// without logging in. Default false: the view is admin data.
	PublicRead bool `yaml:"public_read"`
}

// Node roles. Every role runs the full server; the role says where the
// node sits in a federation and is reported by /debug/info.
const (
	RoleHub   = "hub"
	RoleRelay = "relay"
	RoleEdge  = "edge"
)

// IdentityConfig names the node and says where it keeps its data.
type IdentityConfig struct {
	// Name identifies the node in logs, /debug/info and the mesh, where
	// it must be unique (gossip refuses a second member of one name).
	// Default: the host name and the API port, e.g. web-3-8080, so that
	// nodes on one host differ without configuring names.
	Name string `yaml:"name"`
	// Role is hub, relay or edge. Default hub: a lone node is its own hub.
	Role string `yaml:"role"`
	// Datacenter names the node's data centre: nodes of one data centre
	// fetch blobs from each other before going upstream, and machines see
	// it when they rank nodes. Default dc1.
	Datacenter string `yaml:"datacenter"`
	// AdvertiseURL is the base URL other nodes and machines reach this
	// node's API at, as gossip tells the mesh. Default: the URL it
	// listens on.
	AdvertiseURL string `yaml:"advertise_url"`
	// DataDir holds the embedded database and the blob files unless their
	// paths are set. Default: $PATCHMESH_DATA_DIR, else
	// $XDG_DATA_HOME/patchmesh, else /var/lib/patchmesh if it exists, else
	// ~/.local/share/patchmesh. A running node locks it (LockFile), so
	// that a second node on it is refused.
	DataDir string `yaml:"data_dir"`
	// KeyFile is the node's identity key (ed25519, PEM PKCS#8, mode 0600),
	// created at first start; its public half is what the hub admits
	// (patchmesh node-key prints it). Default <data_dir>/node.key.
	KeyFile string `yaml:"key_file"`
}

// ServerConfig tunes the HTTP listener.
type ServerConfig struct {
	// Listen is the host:port to serve on. Port 0 picks a free port, which
	// the node then reports. Default 127.0.0.1:8080: loopback until an
	// operator decides to expose the node.
	Listen string `yaml:"listen"`
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers, so idle half-open connections cannot pile up. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxIdleConns bounds the main listener's keep-alive connections
	// waiting idle for a next request: past it the one idle longest is
	// closed, so that after a burst of clients the node holds at most
	// this many, about 20 KiB each, rather than every connection the
	// burst opened until idle_timeout. Connections with a request in
	// flight are never closed. Default 256.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// ShutdownTimeout is how long a stopping node waits for requests in
	// flight before it closes their connections. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLSCert and TLSKey are PEM files; set both to serve HTTPS (TLS 1.2
	// or newer). Default: plain HTTP.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TrustedProxies are the addresses or CIDR networks of reverse
	// proxies in front of the node. Only from these peers is
	// X-Forwarded-For believed for the client address that the access log,
	// security events and login limits use. Default none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AdminNetworks, when not empty, are the only networks (addresses or
	// CIDRs) the admin API, its login included, and the dashboard's
	// endpoints answer; others get 403 and a security event. Default
	// none: every network.
	AdminNetworks []string `yaml:"admin_networks"`
	// MetricsTokenFile names a file holding the bearer token GET /metrics
	// then requires (at least 16 bytes; a scraper sends "Authorization:
	// Bearer <token>"). Default empty: /metrics is open.
	MetricsTokenFile string `yaml:"metrics_token_file"`
	// PeerListen is the host:port of the peer listener, where other nodes
	// reach this one: the feed, blobs, peer fetch, report pushes and the
	// join, over TLS 1.3 with mutual authentication by node key (each
	// side's key must hold a live admission at the other). Set, it is
	// the only way in for node-to-node traffic: a sync token is refused
	// on the main listener, and this node's own links, peer fetches and
	// report pushes use mutual TLS too, so its upstreams' URLs must be
	// their peer listeners. Default empty: no peer listener, and sync
	// tokens work on the main listener as they always did.
	PeerListen string `yaml:"peer_listen"`
	// PeerAdvertiseURL is the peer listener's URL as other nodes reach
	// it. Default https://<peer_listen>, with the real port.
	PeerAdvertiseURL string `yaml:"peer_advertise_url"`
}

// Store drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
	DriverFS       = "fs"
	DriverS3       = "s3"
	DriverSwift    = "swift"
)

// StoreConfig chooses and tunes the metadata store.
type StoreConfig struct {
	// Driver is sqlite (embedded, nothing to install) or postgres.
	// Default sqlite.
	Driver string `yaml:"driver"`
	// Path is the SQLite database file. Default <data_dir>/patchmesh.db.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string (postgres://user:pass@host/db).
	// Required for the postgres driver. Its password is never logged.
	DSN string `yaml:"dsn"`
	// MaxConns caps the PostgreSQL pool. Default 16.
	MaxConns int32 `yaml:"max_conns"`
	// MinConns keeps this many PostgreSQL connections open. Default 0.
	MinConns int32 `yaml:"min_conns"`
	// ConnMaxLifetime recycles PostgreSQL connections this old, so that
	// a server-side failover or config change reaches every connection.
	// Default 1h.
	ConnMaxLifetime time.Duration `yaml:"conn_max_lifetime"`
	// ConnMaxIdleTime closes PostgreSQL connections idle this long.
	// Default 30m.
	ConnMaxIdleTime time.Duration `yaml:"conn_max_idle_time"`
	// CacheMaxAge bounds how long the token cache and the offer index
	// serve an entry without a write on this node (this node's own writes
	// invalidate them at once). 0 means 1h for a SQLite file in the data
	// directory (no other writer) and for PostgreSQL (other nodes' writes
	// are heard of within 200 ms through the polled store generation,
	// migration 0013), and 1s for a SQLite file elsewhere, where it bounds
	// how late a token revoked by another node sharing the file is refused
	// here.
	CacheMaxAge time.Duration `yaml:"cache_max_age"`
	// SQLiteMmapSize is how many bytes of the SQLite database file SQLite
	// maps into the node's memory instead of reading each page with a
	// system call. Mapped pages count in the node's RSS (as file-backed
	// memory the kernel can drop), once for each of the store's
	// connections that mapped them. Default 0: off
	// (sqlstore.DefaultSQLiteMmapSize).
	SQLiteMmapSize int64 `yaml:"sqlite_mmap_size"`
}

// maxSQLiteMmapSize is SQLite's own ceiling on mmap_size in the build the
// node links (SQLITE_MAX_MMAP_SIZE, just under 2 GiB): SQLite would
// silently cut a larger value to it, so the config refuses one instead.
const maxSQLiteMmapSize = 0x7fff0000

// BlobsConfig chooses and tunes where patch files are kept.
//
// The object-store options are flat (s3_…, swift_…) so that each has its
// own environment variable, e.g. PATCHMESH_BLOBS_S3_SECRET_KEY. Secrets
// can also come from files (…_file), which is the better place for them.
type BlobsConfig struct {
	// Driver is fs (files under Path, served with sendfile), postgres
	// (chunked rows in the store's database; needs store.driver postgres),
	// s3 (an S3 bucket or an S3-compatible store) or swift (an OpenStack
	// Swift container). Default fs.
	Driver string `yaml:"driver"`
	// Path is the fs driver's directory. Default <data_dir>/blobs.
	Path string `yaml:"path"`
	// ChunkSize is the postgres driver's row size in bytes. Default 1 MiB.
	ChunkSize int `yaml:"chunk_size"`

	// Shared says other nodes (of one data centre) use the same bucket or
	// container and prefix: a blob one writes is visible to all, and a
	// node's delete removes a blob only once no node names it. Node names
	// must then be unique among them. s3 and swift only. Default false.
	Shared bool `yaml:"shared"`
	// Redirect answers a blob download with a redirect to a short-lived
	// presigned S3 URL or Swift temp URL instead of relaying the bytes.
	// The client then needs to reach the object store. Default false.
	Redirect bool `yaml:"redirect"`
	// RedirectTTL is how long a redirect URL stays valid. Default 5m.
	RedirectTTL time.Duration `yaml:"redirect_ttl"`

	// S3Bucket is the s3 driver's bucket (required for it).
	S3Bucket string `yaml:"s3_bucket"`
	// S3Prefix is prepended to every key, e.g. patchmesh/.
	S3Prefix string `yaml:"s3_prefix"`
	// S3Region is the bucket's region. Default: the SDK's (AWS_REGION,
	// ~/.aws/config), else us-east-1.
	S3Region string `yaml:"s3_region"`
	// S3Endpoint is the base URL of an S3-compatible store (MinIO, Ceph
	// RGW…), e.g. https://minio.dc1.example:9000. Empty: AWS.
	S3Endpoint string `yaml:"s3_endpoint"`
	// S3PathStyle puts the bucket in the URL path, as most S3-compatible
	// stores want. Default false.
	S3PathStyle bool `yaml:"s3_path_style"`
	// S3Secure requires TLS to the store; turn it off only to allow a
	// plain http:// endpoint on a trusted network. Default true.
	S3Secure bool `yaml:"s3_secure"`
	// S3AccessKey and S3SecretKey (or S3SecretKeyFile) are static
	// credentials. Empty: the AWS SDK's default chain (AWS_ACCESS_KEY_ID
	// and AWS_SECRET_ACCESS_KEY, shared files, an instance role).
	S3AccessKey     string `yaml:"s3_access_key"`
	S3SecretKey     string `yaml:"s3_secret_key"`
	S3SecretKeyFile string `yaml:"s3_secret_key_file"`
	// S3CAFile is a PEM bundle trusted besides the system roots.
	S3CAFile string `yaml:"s3_ca_file"`
	// S3PartSize is the multipart part size in bytes, about the memory
	// one upload holds (5 MiB to 1 GiB). Default 8 MiB.
	S3PartSize int `yaml:"s3_part_size"`

	// SwiftAuthURL is the identity endpoint: …/auth/v1.0 (auth v1,
	// tempauth) or …/v3 (Keystone). Required for the swift driver.
	SwiftAuthURL string `yaml:"swift_auth_url"`
	// SwiftAuthVersion is 1 or 3. Default: guessed from the URL.
	SwiftAuthVersion int `yaml:"swift_auth_version"`
	// SwiftUser and SwiftKey (or SwiftKeyFile) log in; v1 users are
	// account:user. Keystone users also need SwiftDomain and SwiftProject
	// (SwiftProjectDomain if the project's domain differs).
	SwiftUser          string `yaml:"swift_user"`
	SwiftKey           string `yaml:"swift_key"`
	SwiftKeyFile       string `yaml:"swift_key_file"`
	SwiftDomain        string `yaml:"swift_domain"`
	SwiftProject       string `yaml:"swift_project"`
	SwiftProjectDomain string `yaml:"swift_project_domain"`
	// SwiftAppCredentialID and its secret (or secret file) log in with a
	// Keystone application credential instead of a user.
	SwiftAppCredentialID         string `yaml:"swift_app_credential_id"`
	SwiftAppCredentialSecret     string `yaml:"swift_app_credential_secret"`
	SwiftAppCredentialSecretFile string `yaml:"swift_app_credential_secret_file"`
	// SwiftRegion picks the object-store endpoint of the Keystone catalog.
	SwiftRegion string `yaml:"swift_region"`
	// SwiftContainer is the container (required; it must exist).
	SwiftContainer string `yaml:"swift_container"`
	// SwiftPrefix is prepended to every object name.
	SwiftPrefix string `yaml:"swift_prefix"`
	// SwiftCAFile is a PEM bundle trusted besides the system roots.
	SwiftCAFile string `yaml:"swift_ca_file"`
	// SwiftTempURLKey (or SwiftTempURLKeyFile) is the account's temp URL
	// key, needed only for redirect.
	SwiftTempURLKey     string `yaml:"swift_temp_url_key"`
	SwiftTempURLKeyFile string `yaml:"swift_temp_url_key_file"`
}

// AuthConfig tunes administrator authentication.
type AuthConfig struct {
	// Admins are administrators with bcrypt password hashes (make one with
	// `patchmesh admin hash-password`). With none configured and none
	// stored, the first start creates an admin and prints its password
	// once. In the environment: PATCHMESH_AUTH_ADMINS=name:hash,name:hash.
	Admins []auth.Admin `yaml:"admins"`
	// MacaroonTTL is how long an admin login stays valid. Default 240h.
	MacaroonTTL time.Duration `yaml:"macaroon_ttl"`
	// KeyMint is how long one macaroon root key mints before the next
	// replaces it. Default 24h.
	KeyMint time.Duration `yaml:"key_mint"`
	// BcryptCost is the cost of the bootstrap admin's password hash.
	// Default 12.
	BcryptCost int `yaml:"bcrypt_cost"`
	// Failed logins count per user name and per client address: after
	// LoginFreeFailures, each attempt must wait LoginDelay, doubling up to
	// LoginMaxDelay; LoginLockoutAfter failures lock the name or address
	// out for LoginLockoutWindow. Refused attempts get 429 with
	// Retry-After at once, with no password check. Defaults 3, 1s, 1m,
	// 10, 15m.
	LoginFreeFailures  int           `yaml:"login_free_failures"`
	LoginDelay         time.Duration `yaml:"login_delay"`
	LoginMaxDelay      time.Duration `yaml:"login_max_delay"`
	LoginLockoutAfter  int           `yaml:"login_lockout_after"`
	LoginLockoutWindow time.Duration `yaml:"login_lockout_window"`
	// BcryptConcurrency caps password checks at once, so that a flood of
	// logins leaves cores for other requests; a login that finds no slot
	// within BcryptWait gets 503 with Retry-After. Defaults 1 and 500ms.
	BcryptConcurrency int           `yaml:"bcrypt_concurrency"`
	BcryptWait        time.Duration `yaml:"bcrypt_wait"`
}

// LimitsConfig bounds what one request may send.
type LimitsConfig struct {
	// MaxBodyBytes caps JSON request bodies. Default 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxUploadBytes caps one patch upload. Default 1 GiB.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
}

// GovernorConfig bounds concurrent work so that a burst degrades into
// quick 503s instead of a node that stops answering.
type GovernorConfig struct {
	// MaxInFlight is how many client requests run at once (blob downloads
	// and operators' requests have lanes of their own). Default 64.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxQueue is how many more may wait for a slot; beyond it requests
	// get 503 with Retry-After. 0 means no queue: a request that finds no
	// free slot is refused at once. Default 500.
	MaxQueue int `yaml:"max_queue"`
	// QueueTimeout is how long a request waits for a slot before it gets
	// 503 with a Retry-After measured from how fast requests finish: the
	// bound on an admitted request's wait. Default 1s.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	// AdminMaxInFlight and AdminMaxQueue size the admin lane: operators'
	// requests (the admin API but login, topology, the dashboard's
	// endpoints) have slots of their own, so that they are answered while
	// clients flood the node. Defaults 32 and 32.
	AdminMaxInFlight int `yaml:"admin_max_in_flight"`
	AdminMaxQueue    int `yaml:"admin_max_queue"`
}

// SyncConfig links the node into a federation: the hub signs what it
// publishes; relays and edges pull from upstreams and verify.
type SyncConfig struct {
	// HubKey is the hub's ed25519 signing key file (PEM PKCS#8, mode
	// 0600), created on the hub's first start. Hub only. Default
	// <data_dir>/hub.key.
	HubKey string `yaml:"hub_key"`
	// Trust pins the hub public keys ("ed25519:…", from `patchmesh
	// hub-key` or `patchmesh admin hub-key` at the hub) whose records a
	// relay or edge accepts; more keys can be pinned at run time with
	// `patchmesh admin trust add`. In the environment: a comma-separated
	// list.
	Trust []string `yaml:"trust"`
	// PeerKeys pins node public keys ("ed25519:…") this node accepts as
	// peers over the peer listener's mutual TLS before it has their
	// admissions: an upstream it must reach to receive them at all. A pin
	// is dropped the moment the key's admission is removed. `patchmesh
	// join` pins the hub it joined, and the nodes the hub had admitted,
	// without this (data_dir/join.json).
	PeerKeys []string `yaml:"peer_keys"`
	// Endorsements are hub key endorsements ("pmke_…", from `patchmesh
	// hub-key --key OLD --endorse NEW`): the old hub key vouching for the
	// new one. Every node hands them to machines with each offer, so that a
	// machine pinning the old key accepts records of the new one. In the
	// environment: a comma-separated list.
	Endorsements []string `yaml:"endorsements"`
	// Links say what to pull: each feeds one local tier from the first
	// healthy of its upstreams. Required for relays and edges, refused on
	// the hub. Not settable from the environment.
	Links []LinkConfig `yaml:"links" env:"-"`
	// Wait is how long a caught-up link's feed request waits upstream for
	// news (the long poll). Default 30s, at most 60s.
	Wait time.Duration `yaml:"wait"`
	// BatchSize is the most events one sync round applies. Default 100.
	BatchSize int `yaml:"batch_size"`
	// Parallel is how many blobs the node fetches at once. Default 4.
	Parallel int `yaml:"parallel"`
	// PeerWait is how long a node waits for a peer of its data centre to
	// have a new blob before it fetches the blob upstream itself. With
	// gossip on, one node per data centre (the designated fetcher) goes
	// upstream at once and the others fetch from it; this bounds how long
	// they wait for it, and should cover one blob's transfer from
	// upstream. Default 10s.
	PeerWait time.Duration `yaml:"peer_wait"`
	// RetryMin and RetryMax bound the backoff after a failed round.
	// Defaults 500ms and 1m.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// CAFile is a PEM bundle trusted for https upstreams besides the
	// system roots.
	CAFile string `yaml:"ca_file"`
	// Proxy is the HTTP(S) proxy URL for upstream connections. Default:
	// the HTTPS_PROXY, HTTP_PROXY and NO_PROXY environment variables.
	Proxy string `yaml:"proxy"`
	// HeartbeatEvery is how often the hub signs each tier's heartbeat
	// (its newest hub sequence and the time), which every feed answer
	// carries down the mesh. Hub only. Default 5s.
	HeartbeatEvery time.Duration `yaml:"heartbeat_every"`
	// StaleAfter is how old a link's newest hub heartbeat may grow, and
	// how long a record a heartbeat announced may stay missing, before the
	// link reports itself stale (sync status, patchmesh_sync_stale, a
	// sync_stale security event) and tries its other upstreams. It must
	// exceed heartbeat_every + depth × wait, depth being how many hops the
	// node is below the hub: each hop passes the heartbeat on with its
	// next feed answer. Default 2m (three hops at the default wait).
	StaleAfter time.Duration `yaml:"stale_after"`
	// AllowHTTP permits plain http:// upstreams on every link. Off by
	// default: over http the sync token and every blob cross the network
	// in clear, for anyone on the path to read or change (signatures still
	// stop a changed record, not a stolen token). Set it, or allow_http on
	// one upstream, only on loopback or a network you trust.
	AllowHTTP bool `yaml:"allow_http"`
}

// GossipConfig joins the node to the mesh's membership (hashicorp/
// memberlist): who is alive, where, serving what. Off unless Bind is set.
type GossipConfig struct {
	// Bind is the host:port gossip listens on (UDP and TCP), e.g.
	// 10.0.0.5:7946. Empty: no gossip, the node knows only its config.
	Bind string `yaml:"bind"`
	// Advertise is the host:port other members reach this one at, when it
	// differs from Bind (NAT). Default: Bind.
	Advertise string `yaml:"advertise"`
	// Join lists host:port of members to join at start; any one that
	// answers is enough. Retried in the background until one does.
	Join []string `yaml:"join"`
	// Profile starts the timing from memberlist's defaults: local (one
	// host, tests), lan (one data centre's network; memberlist's LAN
	// defaults with a 500ms probe interval, so that a dead node is known
	// everywhere within about 5 s) or wan. Default lan.
	Profile string `yaml:"profile"`
	// Keys is the gossip keyring, base64 16, 24 or 32 byte keys, the first
	// used to encrypt and all to decrypt (make one with `patchmesh
	// gossip-key`). KeyringFile names a file with one key per line
	// instead; its keys come first. Gossip is always encrypted: Bind
	// without a key is refused. In the environment: comma-separated.
	Keys        []string `yaml:"keys"`
	KeyringFile string   `yaml:"keyring_file"`
	// Timing overrides; 0 keeps the profile's value.
	ProbeInterval    time.Duration `yaml:"probe_interval"`
	ProbeTimeout     time.Duration `yaml:"probe_timeout"`
	GossipInterval   time.Duration `yaml:"gossip_interval"`
	PushPullInterval time.Duration `yaml:"push_pull_interval"`
	SuspicionMult    int           `yaml:"suspicion_mult"`
	// Compression turns memberlist's LZW compression of gossip packets on
	// or off; empty keeps the profile's: off for local and lan, on for wan.
	// Compressing every packet of a few hundred bytes was 12% of the CPU
	// of a 100-node start (bench/RESULTS.md, issue 15); on a LAN the bytes
	// it saves are cheaper than that. Members with different settings
	// understand each other.
	Compression string `yaml:"compression"`
	// Pools put the node in several gossip pools instead of one: each its
	// own memberlist with its own address, members and key, so that
	// gossip's cost stays that of a pool rather than of the whole mesh
	// (docs/scale.md). Typically the hub is in "backbone", each region's
	// top relay in "backbone" and its region's pool, and the region's
	// other relays and edges in the region's pool alone. With pools,
	// bind, advertise and join are set per pool and left empty above;
	// profile, keys (with keyring_file), the timing overrides and
	// compression set above are what a pool that leaves its own empty
	// uses. File only.
	Pools []GossipPoolConfig `yaml:"pools" env:"-"`
}

// On says whether the node gossips at all: it binds one pool, or lists
// pools.
func (g GossipConfig) On() bool { return g.Bind != "" || len(g.Pools) > 0 }

// GossipPoolConfig is one gossip pool of the node (gossip.pools). Fields
// left empty or zero take the gossip section's value, except bind,
// advertise and join, which are the pool's own.
type GossipPoolConfig struct {
	// Name tells the node's pools apart in metrics, logs and the
	// topology view; use the same name on every member, e.g. backbone or
	// region-eu. Required, unique on the node.
	Name string `yaml:"name"`
	// Bind is the host:port this pool's gossip listens on (UDP and TCP);
	// each pool needs its own port. Required.
	Bind string `yaml:"bind"`
	// Advertise is the host:port other members of the pool reach this one
	// at, when it differs from Bind (NAT). Default: Bind.
	Advertise string `yaml:"advertise"`
	// Join lists host:port of members of this pool to join at start.
	Join []string `yaml:"join"`
	// Profile is local, lan or wan, as gossip.profile: lan inside a
	// region, wan for a backbone that crosses continents. Default:
	// gossip.profile.
	Profile string `yaml:"profile"`
	// Keys and KeyringFile are the pool's keyring, as gossip.keys and
	// gossip.keyring_file. Give each pool its own key: the key is what
	// keeps another pool's members (and a mistyped join) out. Default:
	// the gossip section's keys.
	Keys        []string `yaml:"keys"`
	KeyringFile string   `yaml:"keyring_file"`
	// Timing overrides, as in the gossip section; 0 takes its value.
	ProbeInterval    time.Duration `yaml:"probe_interval"`
	ProbeTimeout     time.Duration `yaml:"probe_timeout"`
	GossipInterval   time.Duration `yaml:"gossip_interval"`
	PushPullInterval time.Duration `yaml:"push_pull_interval"`
	SuspicionMult    int           `yaml:"suspicion_mult"`
	// Compression is on, off or "" (gossip.compression).
	Compression string `yaml:"compression"`
}

// WebhooksConfig tunes the delivery of events to the webhooks added with
// `patchmesh admin webhooks add`.
type WebhooksConfig struct {
	// AllowHTTP lets hooks use plain http URLs. Default false: https only,
	// as a delivery carries the node's events to another host; turn it on
	// for a receiver on loopback or in tests.
	AllowHTTP bool `yaml:"allow_http"`
	// Timeout bounds one delivery attempt. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// RetryMin and RetryMax bound the backoff between failed attempts on
	// one hook. Defaults 1s and 5m.
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// Keep is how long the record of a delivered event is kept; pending
	// ones stay until delivered. Default 168h (7 days).
	Keep time.Duration `yaml:"keep"`
}

// LinkConfig is one sync link.
type LinkConfig struct {
	// Tier is the local tier the link feeds; it is created if missing.
	Tier string `yaml:"tier"`
	// HubTier is the hub tier whose records the link accepts. Default:
	// the same name as Tier.
	HubTier string `yaml:"hub_tier"`
	// Upstreams are tried in order.
	Upstreams []UpstreamConfig `yaml:"upstreams"`
	// Architectures, Flavours and MinKernel narrow what the link takes
	// (e.g. [x86_64], [generic, aws], "5.15"). Empty takes everything.
	Architectures []string `yaml:"architectures"`
	Flavours      []string `yaml:"flavours"`
	MinKernel     string   `yaml:"min_kernel"`
}

// UpstreamConfig is one upstream candidate.
type UpstreamConfig struct {
	// URL is the upstream node's base URL.
	URL string `yaml:"url"`
	// Token is a sync token from `patchmesh admin sync-tokens add TIER
	// NAME` on the upstream; TokenFile names a file holding it instead
	// (preferred: a config file is often readable by more people).
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// AllowHTTP permits this upstream's URL to be plain http:// (see
	// sync.allow_http).
	AllowHTTP bool `yaml:"allow_http"`
}

// ReportsConfig tunes fleet reports: what a relay or edge pushes up its
// links about its machines and its subtree's, and how long any node keeps
// check-ins and reports.
type ReportsConfig struct {
	// Interval is the mean time between pushes up each link (each wait
	// 0.75 to 1.25 of it, at random). Default 60s.
	Interval time.Duration `yaml:"interval"`
	// Machines sends per-machine rows (under the mesh-wide machine ID)
	// besides the counts, so that upstream listings show each machine and
	// a machine that moved between nodes counts once. Default false:
	// counts only, a few hundred bytes per node.
	Machines bool `yaml:"machines"`
	// Retention is how long a machine that stopped checking in, and a
	// downstream's report that stopped coming, are kept. Default 720h.
	Retention time.Duration `yaml:"retention"`
	// CleanupEvery is how often the cleanup job runs. Default 1h.
	CleanupEvery time.Duration `yaml:"cleanup_every"`
	// MaxBytes caps one report push a downstream sends here. Default
	// 64 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
}

// RolloutsConfig tunes the hub's rollout runner.
type RolloutsConfig struct {
	// Tick is how often the hub looks at its live rollouts: opens a wave
	// whose delay passed and whose gate holds, halts one whose gate
	// failed. Hub only. Default 5s.
	Tick time.Duration `yaml:"tick"`
}

// LogConfig shapes the node's log.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json (one event per line, for machines) or text.
	// Default json.
	Format string `yaml:"format"`
	// SuccessesPerSecond caps how many lines a second record successes
	// that a fleet makes all the time: the access line of a successful
	// check-in, download or feed poll, and the authn_token_success event
	// of each accepted bearer token (each kind sampled on its own). The
	// metrics count every one. Failures, admin requests and every other
	// security event are always logged. 0 logs every success. Default 10.
	SuccessesPerSecond int `yaml:"successes_per_second"`
}

// Defaults returns the configuration a node runs with when nothing is set:
// embedded SQLite and filesystem blobs under the default data dir,
// listening on loopback. The data dir depends on the process environment
// (see IdentityConfig.DataDir).
func Defaults() Config { return DefaultsWithEnv(os.Getenv) }

// DefaultsWithEnv is Defaults with the data dir chosen from getenv rather
// than the process environment.
func DefaultsWithEnv(getenv func(string) string) Config {
	return Config{
		Node: IdentityConfig{
			Role:       RoleHub,
			Datacenter: "dc1",
			DataDir:    defaultDataDir(getenv, os.UserHomeDir, dirExists),
		},
		Server: ServerConfig{
			Listen:            "127.0.0.1:8080",
			TrustedProxies:    []string{},
			AdminNetworks:     []string{},
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxIdleConns:      256,
			ShutdownTimeout:   30 * time.Second,
		},
		Store: StoreConfig{
			Driver:          DriverSQLite,
			MaxConns:        16,
			ConnMaxLifetime: time.Hour,
			ConnMaxIdleTime: 30 * time.Minute,
			SQLiteMmapSize:  sqlstore.DefaultSQLiteMmapSize,
		},
		Blobs: BlobsConfig{
			Driver:      DriverFS,
			ChunkSize:   pgblob.DefaultChunkSize,
			RedirectTTL: 5 * time.Minute,
			S3Secure:    true,
			S3PartSize:  s3blob.DefaultPartSize,
		},
		Auth: AuthConfig{
			MacaroonTTL: auth.DefaultMacaroonTTL,
			KeyMint:     auth.DefaultKeyMint,
			BcryptCost:  12,

			LoginFreeFailures:  auth.DefaultFreeFailures,
			LoginDelay:         auth.DefaultLoginDelay,
			LoginMaxDelay:      auth.DefaultMaxLoginDelay,
			LoginLockoutAfter:  auth.DefaultLockoutAfter,
			LoginLockoutWindow: auth.DefaultLockoutWindow,
			BcryptConcurrency:  auth.DefaultBcryptConcurrency,
			BcryptWait:         auth.DefaultBcryptWait,
		},
		Limits: LimitsConfig{
			MaxBodyBytes:   api.DefaultMaxBodyBytes,
			MaxUploadBytes: api.DefaultMaxUploadBytes,
		},
		Governor: GovernorConfig{
			MaxInFlight:  api.DefaultMaxInFlight,
			MaxQueue:     api.DefaultMaxQueue,
			QueueTimeout: api.DefaultQueueTimeout,

			AdminMaxInFlight: api.DefaultAdminMaxInFlight,
			AdminMaxQueue:    api.DefaultAdminMaxQueue,
		},
		Log: LogConfig{Level: "info", Format: "json", SuccessesPerSecond: 10},
		Sync: SyncConfig{
			Trust:        []string{},
			PeerKeys:     []string{},
			Endorsements: []string{},
			Links:        []LinkConfig{},
			Wait:         30 * time.Second,
			BatchSize:    federation.DefaultFeedLimit,
			Parallel:     4,
			PeerWait:     federation.DefaultPeerWait,
			RetryMin:     500 * time.Millisecond,
			RetryMax:     time.Minute,

			HeartbeatEvery: federation.DefaultHeartbeatEvery,
			StaleAfter:     federation.DefaultStaleAfter,
		},
		Gossip: GossipConfig{
			Join:    []string{},
			Profile: "lan",
			Keys:    []string{},
			Pools:   []GossipPoolConfig{},
		},
		Webhooks: WebhooksConfig{
			Timeout:  webhook.DefaultTimeout,
			RetryMin: webhook.DefaultRetryMin,
			RetryMax: webhook.DefaultRetryMax,
			Keep:     webhook.DefaultKeep,
		},
		Reports: ReportsConfig{
			Interval:     time.Minute,
			Retention:    720 * time.Hour,
			CleanupEvery: time.Hour,
			MaxBytes:     federation.DefaultMaxReportBytes,
		},
		Rollouts: RolloutsConfig{Tick: rollout.DefaultTick},
	}
}

// DefaultName is the node name used when none is configured: the host
// name (up to its first dot, made to fit node.name's rule) and the port
// the API listens on. Two nodes on one host cannot share a port, so their
// default names differ; nodes on different hosts differ by host name.
func DefaultName(hostname, port string) string {
	host, _, _ := strings.Cut(hostname, ".")
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, host)
	host = strings.TrimLeft(host, "-_")
	if host == "" {
		host = "patchmesh"
	}
	if max := 63 - 1 - len(port); len(host) > max {
		host = host[:max]
	}
	return host + "-" + port
}

// systemDataDir is used by default when it exists: a packaged install
// creates it, and a node then keeps its data where operators expect it.
const systemDataDir = "/var/lib/patchmesh"

// defaultDataDir picks the data dir from the environment and the file
// system; its inputs are parameters so that tests can exercise each branch.
func defaultDataDir(getenv func(string) string, home func() (string, error), exists func(string) bool) string {
	if d := getenv("PATCHMESH_DATA_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "patchmesh")
	}
	if exists(systemDataDir) {
		return systemDataDir
	}
	if h, err := home(); err == nil && h != "" {
		return filepath.Join(h, ".local", "share", "patchmesh")
	}
	// No home at all (a bare container): stay in the working directory
	// rather than refuse to start.
	return "patchmesh-data"
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// Load reads a YAML config file over Defaults. A key the file should not
// have is an error, so that a misspelt option is never silently ignored.
func Load(path string) (Config, error) {
	c := Defaults()
	if err := c.LoadFile(path); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadFile layers a YAML config file over c; options the file does not set
// keep their values. On an error c is unchanged.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	next := *c
	next.Auth.Admins = nil
	if err := next.decode(b); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if next.Auth.Admins == nil {
		next.Auth.Admins = c.Auth.Admins
	}
	*c = next
	return nil
}

// decode layers YAML onto c. An empty document changes nothing. Errors
// name the option by its key in the file (decodeYAML).
func (c *Config) decode(b []byte) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	return decodeYAML(&doc, c)
}

// HubKeyPath is the hub's signing key file once defaults are applied.
func (c Config) HubKeyPath() string {
	if c.Sync.HubKey != "" {
		return c.Sync.HubKey
	}
	return filepath.Join(c.Node.DataDir, "hub.key")
}

// NodeKeyPath is the node's identity key file once defaults are applied.
func (c Config) NodeKeyPath() string {
	if c.Node.KeyFile != "" {
		return c.Node.KeyFile
	}
	return filepath.Join(c.Node.DataDir, "node.key")
}

// StorePath is where the SQLite database lives once defaults are applied.
func (c Config) StorePath() string {
	if c.Store.Path != "" {
		return c.Store.Path
	}
	return filepath.Join(c.Node.DataDir, "patchmesh.db")
}

// BlobPath is the fs blob driver's directory once defaults are applied.
func (c Config) BlobPath() string {
	if c.Blobs.Path != "" {
		return c.Blobs.Path
	}
	return filepath.Join(c.Node.DataDir, "blobs")
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks the whole config and reports every problem it finds,
// each prefixed with the option's path as it appears in the file.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	positive := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, "must be a positive duration such as 30s, got %v", d)
		}
	}

	if c.Node.Name != "" && !nodeNameRE.MatchString(c.Node.Name) {
		bad("node.name", "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", c.Node.Name)
	}
	switch c.Node.Role {
	case RoleHub, RoleRelay, RoleEdge:
	default:
		bad("node.role", "must be hub, relay or edge, got %q", c.Node.Role)
	}
	if c.Node.DataDir == "" {
		bad("node.data_dir", "must not be empty")
	}

	if _, port, err := net.SplitHostPort(c.Server.Listen); err != nil {
		bad("server.listen", "must be host:port such as 127.0.0.1:8080, got %q", c.Server.Listen)
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		bad("server.listen", "bad port %q", port)
	}
	positive("rollouts.tick", c.Rollouts.Tick)
	positive("webhooks.timeout", c.Webhooks.Timeout)
	positive("webhooks.retry_min", c.Webhooks.RetryMin)
	positive("webhooks.retry_max", c.Webhooks.RetryMax)
	positive("webhooks.keep", c.Webhooks.Keep)
	if c.Webhooks.RetryMax < c.Webhooks.RetryMin {
		bad("webhooks.retry_max", "must not be below retry_min (%v), got %v", c.Webhooks.RetryMin, c.Webhooks.RetryMax)
	}
	positive("server.read_header_timeout", c.Server.ReadHeaderTimeout)
	positive("server.idle_timeout", c.Server.IdleTimeout)
	if c.Server.MaxIdleConns < 1 {
		bad("server.max_idle_conns", "must be at least 1, got %d", c.Server.MaxIdleConns)
	}
	positive("server.shutdown_timeout", c.Server.ShutdownTimeout)
	if c.Server.PeerListen != "" {
		if _, port, err := net.SplitHostPort(c.Server.PeerListen); err != nil {
			bad("server.peer_listen", "must be host:port such as 10.0.0.5:8443, got %q", c.Server.PeerListen)
		} else if _, err := net.LookupPort("tcp", port); err != nil {
			bad("server.peer_listen", "bad port %q", port)
		}
	}
	if u := c.Server.PeerAdvertiseURL; u != "" {
		if pu, err := url.Parse(u); err != nil || pu.Scheme != "https" || pu.Host == "" || pu.Path != "" || pu.User != nil {
			bad("server.peer_advertise_url", "must be an https URL with a host and no path, got %q", u)
		}
		if c.Server.PeerListen == "" {
			bad("server.peer_advertise_url", "needs server.peer_listen")
		}
	}
	for i, k := range c.Sync.PeerKeys {
		if _, err := federation.ParsePublicKey(k); err != nil {
			bad(fmt.Sprintf("sync.peer_keys[%d]", i), "%v", err)
		}
	}
	if (c.Server.TLSCert == "") != (c.Server.TLSKey == "") {
		bad("server.tls_cert", "tls_cert and tls_key must be set together")
	}

	switch c.Store.Driver {
	case DriverSQLite:
	case DriverPostgres:
		if c.Store.DSN == "" {
			bad("store.dsn", "is required when store.driver is postgres")
		} else if err := checkDSN(c.Store.DSN); err != nil {
			bad("store.dsn", "%v", err)
		}
		if c.Store.MaxConns < 1 {
			bad("store.max_conns", "must be at least 1, got %d", c.Store.MaxConns)
		}
		if c.Store.MinConns < 0 || c.Store.MinConns > c.Store.MaxConns {
			bad("store.min_conns", "must be between 0 and max_conns (%d), got %d", c.Store.MaxConns, c.Store.MinConns)
		}
		positive("store.conn_max_lifetime", c.Store.ConnMaxLifetime)
		positive("store.conn_max_idle_time", c.Store.ConnMaxIdleTime)
	default:
		bad("store.driver", "must be sqlite or postgres, got %q", c.Store.Driver)
	}

	errs = append(errs, c.validateBlobs()...)

	if err := c.authConfig().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("auth.%w", err))
	}
	positive("auth.macaroon_ttl", c.Auth.MacaroonTTL)
	positive("auth.key_mint", c.Auth.KeyMint)
	positive("auth.login_delay", c.Auth.LoginDelay)
	positive("auth.login_max_delay", c.Auth.LoginMaxDelay)
	positive("auth.login_lockout_window", c.Auth.LoginLockoutWindow)
	positive("auth.bcrypt_wait", c.Auth.BcryptWait)
	for _, f := range []struct {
		key string
		v   int
	}{{"auth.login_free_failures", c.Auth.LoginFreeFailures}, {"auth.login_lockout_after", c.Auth.LoginLockoutAfter},
		{"auth.bcrypt_concurrency", c.Auth.BcryptConcurrency}} {
		if f.v < 1 {
			bad(f.key, "must be at least 1, got %d", f.v)
		}
	}
	if _, err := api.ParseTrustedProxies(c.Server.TrustedProxies); err != nil {
		bad("server.trusted_proxies", "%v", err)
	}
	if _, err := api.ParseTrustedProxies(c.Server.AdminNetworks); err != nil {
		bad("server.admin_networks", "%v", err)
	}

	if c.Limits.MaxBodyBytes < 1 {
		bad("limits.max_body_bytes", "must be at least 1, got %d", c.Limits.MaxBodyBytes)
	}
	if c.Limits.MaxUploadBytes < 1 {
		bad("limits.max_upload_bytes", "must be at least 1, got %d", c.Limits.MaxUploadBytes)
	}

	if c.Governor.MaxInFlight < 1 {
		bad("governor.max_in_flight", "must be at least 1, got %d", c.Governor.MaxInFlight)
	}
	if c.Governor.MaxQueue < 0 {
		bad("governor.max_queue", "must not be negative, got %d", c.Governor.MaxQueue)
	}
	positive("governor.queue_timeout", c.Governor.QueueTimeout)
	if c.Governor.AdminMaxInFlight < 1 {
		bad("governor.admin_max_in_flight", "must be at least 1, got %d", c.Governor.AdminMaxInFlight)
	}
	if c.Governor.AdminMaxQueue < 0 {
		bad("governor.admin_max_queue", "must not be negative, got %d", c.Governor.AdminMaxQueue)
	}

	errs = append(errs, c.validateSync()...)
	errs = append(errs, c.validateGossip()...)
	positive("reports.interval", c.Reports.Interval)
	positive("reports.retention", c.Reports.Retention)
	positive("reports.cleanup_every", c.Reports.CleanupEvery)
	if c.Reports.MaxBytes < 1 {
		bad("reports.max_bytes", "must be at least 1, got %d", c.Reports.MaxBytes)
	}
	if !nodeNameRE.MatchString(c.Node.Datacenter) {
		bad("node.datacenter", "must be 1-63 letters, digits, '.', '_' or '-', got %q", c.Node.Datacenter)
	}
	if c.Node.AdvertiseURL != "" {
		if u, err := url.Parse(c.Node.AdvertiseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("node.advertise_url", "must be an http(s) base URL such as https://patches.dc1.example:8443")
		}
	}

	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Store.SQLiteMmapSize < 0 || c.Store.SQLiteMmapSize > maxSQLiteMmapSize {
		bad("store.sqlite_mmap_size", "must be 0 (off) to %d bytes, got %d", int64(maxSQLiteMmapSize), c.Store.SQLiteMmapSize)
	}
	if c.Store.CacheMaxAge < 0 {
		bad("store.cache_max_age", "must not be negative, got %v", c.Store.CacheMaxAge)
	}
	if c.Log.SuccessesPerSecond < 0 {
		bad("log.successes_per_second", "must not be negative, got %d", c.Log.SuccessesPerSecond)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// checkDSN catches a DSN that pgx would reject, without echoing it: the
// DSN may hold a password.
func checkDSN(dsn string) error {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if _, err := url.Parse(dsn); err != nil {
			return errors.New("not a valid postgres:// URL")
		}
		return nil
	}
	if !strings.Contains(dsn, "=") {
		return errors.New("must be a postgres:// URL or key=value pairs")
	}
	return nil
}

// RedactedDSN is the store DSN with any password replaced, safe to log.
func (c Config) RedactedDSN() string { return redactDSN(c.Store.DSN) }

var kvPasswordRE = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

func redactDSN(dsn string) string {
	if dsn == "" {
		return ""
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparseable DSN)"
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvPasswordRE.ReplaceAllString(dsn, "${1}xxxxx")
}

// authConfig is the auth package's view of the config.
func (c Config) authConfig() auth.Config {
	return auth.Config{
		Admins:      c.Auth.Admins,
		MacaroonTTL: c.Auth.MacaroonTTL,
		KeyMint:     c.Auth.KeyMint,
		BcryptCost:  c.Auth.BcryptCost,

		SuccessLogPerSecond: c.Log.SuccessesPerSecond,
		Login: auth.LoginLimits{
			FreeFailures:      c.Auth.LoginFreeFailures,
			Delay:             c.Auth.LoginDelay,
			MaxDelay:          c.Auth.LoginMaxDelay,
			LockoutAfter:      c.Auth.LoginLockoutAfter,
			LockoutWindow:     c.Auth.LoginLockoutWindow,
			BcryptConcurrency: c.Auth.BcryptConcurrency,
			BcryptWait:        c.Auth.BcryptWait,
		},
	}
}

// minMetricsToken is the shortest metrics token accepted: a guessable one
// would guard nothing.
const minMetricsToken = 16

// metricsToken reads server.metrics_token_file; "" when unset.
func (c Config) metricsToken() (string, error) {
	if c.Server.MetricsTokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.Server.MetricsTokenFile)
	if err != nil {
		return "", fmt.Errorf("server.metrics_token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < minMetricsToken {
		return "", fmt.Errorf("server.metrics_token_file: the token must be at least %d bytes", minMetricsToken)
	}
	return tok, nil
}
