// Command seed fills a running patchmesh node with a realistic catalog
// through its admin API, for the check-in benchmark (bench/checkin.sh):
// many kernels, several patch versions each, spread over many tiers. It then
// registers -machines machines (writing their tokens to -tokens) and prints
// the first one's token, kernel and arch, so that a load generator can ask
// "newest patch for my kernel on my tier" as those machines.
//
// With -direct, the first machine registers through the API and the rest
// are written straight into the node's store (sqlstore.RegisterMachines,
// 1,000 to a transaction), each with a real random token whose secret's
// SHA-256 is stored as a registration stores it: the node checks those
// tokens on the same path as any other. Registering 100,000 machines one
// request at a time took about 5 minutes on SQLite; this took 23 s there
// and about 5 minutes on a loaded PostgreSQL (bench/RESULTS.md, part D).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "node URL")
	user := flag.String("user", "admin", "admin user")
	patches := flag.Int("patches", 10000, "patches to upload")
	tiers := flag.Int("tiers", 100, "tiers the catalog should have")
	versions := flag.Int("versions", 10, "patch versions per kernel")
	workers := flag.Int("workers", 8, "concurrent requests")
	machines := flag.Int("machines", 1, "machines to register on the first tier, each with its own token")
	tokensFile := flag.String("tokens", "", "file to write every machine token to, one a line")
	direct := flag.String("direct", "", "register machines after the first straight into the node's store: sqlite:PATH or postgres:DSN")
	flag.Parse()
	pw, err := io.ReadAll(os.Stdin)
	if err != nil {
		log.Fatal(err)
	}
	s := &seeder{base: *server, hc: &http.Client{}}
	s.login(*user, string(bytes.TrimSpace(pw)))

	var listed struct {
		Tiers []struct{ Name string } `json:"tiers"`
	}
	s.call("GET", "/v1/admin/tiers", nil, &listed)
	var tierNames []string
	for _, t := range listed.Tiers {
		tierNames = append(tierNames, t.Name)
	}
	for i := len(tierNames); i < *tiers; i++ {
		name := fmt.Sprintf("dc%03d", i)
		s.call("POST", "/v1/admin/tiers", map[string]string{"name": name}, nil)
		tierNames = append(tierNames, name)
	}

	// Patch i is for kernel i/versions, version i%versions+1, and is
	// promoted to tier i%tiers (besides the first tier it lands on), so
	// every tier holds about patches/tiers patches.
	kernels := (*patches + *versions - 1) / *versions
	var done atomic.Int64
	forEach(*patches, *workers, func(i int) {
		k := i / *versions
		body := []byte(fmt.Sprintf("patchmesh bench patch %d\n", i))
		sum := sha256.Sum256(body)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		q := url.Values{
			"digest":  {digest},
			"kernel":  {kernelName(k)},
			"arch":    {"x86_64"},
			"version": {fmt.Sprintf("%d.%d", 100+k%50, i%*versions+1)},
		}
		s.upload("/v1/admin/patches?"+q.Encode(), body)
		if t := tierNames[i%len(tierNames)]; t != tierNames[0] {
			s.call("POST", "/v1/admin/patches/"+digest+"/promote", map[string]string{"tier": t}, nil)
		}
		if n := done.Add(1); n%1000 == 0 {
			log.Printf("seeded %d/%d patches", n, *patches)
		}
	})

	// The benchmark machine sits on the first tier, where every patch lands,
	// so its question has the most rows to choose from.
	var tok struct{ Token string }
	s.call("POST", "/v1/admin/auth-tokens", map[string]string{"tier": tierNames[0], "name": "bench"}, &tok)
	kernel := kernelName(kernels / 2)
	s.bearer = tok.Token
	// Registrations run in parallel as a fleet's would; each is its own
	// transaction on the node.
	tokens := make([]string, *machines)
	through := *machines
	if *direct != "" {
		through = min(1, *machines)
	}
	forEach(through, *workers, func(i int) {
		var reg struct {
			MachineToken string `json:"machine_token"`
		}
		s.call("POST", "/v1/client/register", map[string]string{
			"machine_id": fmt.Sprintf("bench-machine-%016d", i+1), "kernel": kernel, "arch": "x86_64", "client_version": "bench",
		}, &reg)
		tokens[i] = reg.MachineToken
		if i > 0 && i%10000 == 0 {
			log.Printf("registered %d/%d machines", i, *machines)
		}
	})
	if *direct != "" && *machines > through {
		registerDirect(*direct, tierNames[0], kernel, tok.Token, tokens[through:], *workers)
	}
	if *tokensFile != "" {
		var b bytes.Buffer
		for _, t := range tokens {
			b.WriteString(t + "\n")
		}
		if err := os.WriteFile(*tokensFile, b.Bytes(), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	reg := struct{ MachineToken string }{tokens[0]}
	fmt.Printf("MACHINE_TOKEN=%s\nKERNEL=%s\nARCH=x86_64\n", reg.MachineToken, kernel)
}

// registerDirect registers len(tokens) machines on tier straight into the
// store where names (sqlite:PATH or postgres:DSN), as enrolled with the
// auth token enrolledBy, and fills tokens with theirs, from workers
// transactions at a time.
func registerDirect(where, tier, kernel, enrolledBy string, tokens []string, workers int) {
	ctx := context.Background()
	driver, loc, _ := strings.Cut(where, ":")
	var st *sqlstore.Store
	var err error
	switch driver {
	case "sqlite":
		// SQLite has one writer at a time: parallel batches would only
		// queue, and past busy_timeout fail.
		workers = 1
		st, err = sqlstore.OpenSQLite(ctx, loc, sqlstore.Options{})
	case "postgres":
		st, err = sqlstore.OpenPostgres(ctx, loc, sqlstore.PostgresOptions{MaxConns: int32(workers)}, sqlstore.Options{})
	default:
		log.Fatalf("-direct: want sqlite:PATH or postgres:DSN")
	}
	if err != nil {
		log.Fatalf("-direct: open store: %v", err)
	}
	defer st.Close()
	// Machine IDs as a node derives them (a keyed hash of the machine's
	// own ID), under a key of the seeder's own.
	key := make([]byte, 32)
	rand.Read(key)
	// The token's ID is the part between the first two underscores.
	enrolledID := enrolledBy[len("pma_") : len("pma_")+16]
	// 500 a batch: on PostgreSQL each registration holds an advisory lock
	// on its machine ID until the commit, and 8 workers of 1,000 would
	// outgrow the default lock table (max_locks_per_transaction 64 ×
	// max_connections 100).
	const batch = 500
	t0 := time.Now()
	var done atomic.Int64
	// Batches from parallel workers on PostgreSQL, which commits them side
	// by side.
	forEach((len(tokens)+batch-1)/batch, workers, func(b int) {
		start := b * batch
		n := min(batch, len(tokens)-start)
		ms := make([]catalog.Machine, n)
		ts := make([]catalog.Token, n)
		for j := range n {
			id := auth.MachineID(key, fmt.Sprintf("bench-direct-%016d", start+j))
			secret, t, err := auth.NewToken(catalog.TokenMachine)
			if err != nil {
				log.Fatal(err)
			}
			t.Tier, t.Name, t.MachineID = tier, id, id
			ms[j] = catalog.Machine{ID: id, Tier: tier, Kernel: kernel, Arch: "x86_64",
				ClientVersion: "bench", EnrolledBy: enrolledID}
			ts[j] = t
			tokens[start+j] = secret
		}
		if err := st.RegisterMachines(ctx, ms, ts); err != nil {
			log.Fatalf("-direct: %v", err)
		}
		if d := done.Add(int64(n)); d/10000 != (d-int64(n))/10000 {
			log.Printf("registered %d/%d machines in the store", d, len(tokens))
		}
	})
	log.Printf("registered %d machines in the store in %v", len(tokens), time.Since(t0).Round(time.Millisecond))
}

// forEach calls f for 0..n-1 from workers goroutines and returns when
// every call has.
func forEach(n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

func kernelName(k int) string {
	return fmt.Sprintf("5.%d.0-%d.%d-generic", 4+k%20, 10+k, 10+k)
}

type seeder struct {
	base     string
	hc       *http.Client
	macaroon string
	bearer   string
}

func (s *seeder) login(user, pw string) {
	req, _ := http.NewRequest("POST", s.base+"/v1/admin/login", nil)
	req.SetBasicAuth(user, pw)
	var out struct{ Macaroon string }
	s.do(req, &out)
	s.macaroon = out.Macaroon
}

func (s *seeder) upload(path string, body []byte) {
	req, _ := http.NewRequest("POST", s.base+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Macaroon "+s.macaroon)
	s.do(req, nil)
}

func (s *seeder) call(method, path string, in, out any) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, body)
	req.Header.Set("Content-Type", "application/json")
	if s.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+s.bearer)
	} else {
		req.Header.Set("Authorization", "Macaroon "+s.macaroon)
	}
	s.do(req, out)
}

func (s *seeder) do(req *http.Request, out any) {
	resp, err := s.hc.Do(req)
	if err != nil {
		log.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		log.Fatalf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			log.Fatalf("%s %s: decode: %v", req.Method, req.URL.Path, err)
		}
	}
}
