package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// StateFile is the name of the registration file inside the state directory.
const StateFile = "state.json"

// State is what a machine keeps between runs: how it registered, its
// token at each node it has used, and its ranking of the nodes serving its
// tier.
//
// Neither the raw machine ID nor the enrollment token is here: both go to
// the first contact only, at registration, and only the ID's SHA-256 is
// kept. A machine registers at the nodes it fails over to with the machine
// credential a node issued it (Credential), which names this machine only
// (by the issuer's HMAC of its ID) and expires: whoever reads the file
// (0600 in a 0700 directory) can act as this machine, not enroll others.
// State written before credentials existed may still hold an enrollment
// token; it is dropped at the next save.
type State struct {
	// Server is the first contact: the node the machine registered with,
	// as given at registration. It is the last resort when no ranked node
	// answers.
	Server string `json:"server"`
	// Tier is the tier the machine was registered on.
	Tier string `json:"tier"`
	// MachineID is the first contact's name for the machine: the HMAC of
	// its ID under that node's key. Other nodes may name it otherwise; see
	// Registrations.
	MachineID string `json:"machine_id"`
	// Registered is when the machine registered with the first contact.
	Registered time.Time `json:"registered"`
	// Kernel and Arch are what the machine registered with; further
	// registrations outside a refresh use them.
	Kernel string `json:"kernel,omitempty"`
	Arch   string `json:"arch,omitempty"`
	// MachineIDSHA256 is the hex SHA-256 of the raw machine ID registered,
	// so that the state says which machine it belongs to without the ID.
	MachineIDSHA256 string `json:"machine_id_sha256,omitempty"`
	// HubKeys are the hub keys the machine trusts ("ed25519:…"): pinned
	// at registration, plus keys a pinned key endorsed since. Every offer
	// must be signed by one of them. Empty in state written before offers
	// were signed: such a machine refuses to refresh until it registers
	// again with --hub-key.
	HubKeys []string `json:"hub_keys,omitempty"`
	// HubTier is the machine's tier as the hub names it, read from the
	// hub-signed record of its enrollment token (or given by the operator
	// at registration when the token was not made at the hub). Offers must
	// be signed for this tier.
	HubTier string `json:"hub_tier,omitempty"`
	// Applied is what the machine applied last, per "kernel arch": an
	// older offer is refused unless the hub withdrew the applied patch.
	Applied map[string]Applied `json:"applied,omitempty"`
	// Withdrawn are the patches the machine saw the hub withdraw (or
	// remove) on its tier, by digest, with the hub sequence number of the
	// withdrawal: an older offer of one is refused, so that a node cannot
	// hand back a patch the hub took back.
	Withdrawn map[string]int64 `json:"withdrawn,omitempty"`
	// Registrations holds the machine's token at each node, by base URL.
	Registrations map[string]NodeRegistration `json:"registrations"`
	// Nodes are the nodes serving the tier, nearest first, unreachable
	// ones last.
	Nodes []Node `json:"nodes,omitempty"`
	// Ranked is when Nodes was last learned and measured.
	Ranked time.Time `json:"ranked,omitzero"`
	// RerankDue is set after a failover, so that the next call learns and
	// measures the nodes again instead of waiting for Config.RerankEvery.
	RerankDue bool `json:"rerank_due,omitempty"`
	// Heartbeat is the newest hub heartbeat of the machine's hub tier the
	// machine verified; a node may not hand over an older one as news.
	Heartbeat *SeenHeartbeat `json:"heartbeat,omitempty"`
	// Credential is the newest machine credential a node issued the
	// machine (pmc_…): what it registers with at a node it fails over to,
	// in place of the enrollment token and its raw ID, which only the
	// first contact receives. Empty when no node issued one.
	Credential string `json:"credential,omitempty"`
	// Stale says why the last refresh found no fresh node; empty when it
	// did.
	Stale string `json:"stale,omitempty"`
}

// NodeRegistration is the machine's registration at one node.
type NodeRegistration struct {
	// MachineToken is the machine's bearer credential there (pmm_…).
	MachineToken string `json:"machine_token"`
	// MachineID is that node's name for the machine.
	MachineID string `json:"machine_id,omitempty"`
	// Registered is when the machine registered there.
	Registered time.Time `json:"registered"`
}

// legacyState is the state file written before machines used more than one
// node: one server and its token.
type legacyState struct {
	MachineToken string `json:"machine_token"`
}

// LoadState reads the state directory's registration, migrating a file in
// the one-server format (which the next write replaces). ErrNotRegistered
// if there is none.
func LoadState(dir string) (State, error) {
	path := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, fmt.Errorf("%w (no %s in %s)", ErrNotRegistered, StateFile, dir)
	}
	if err != nil {
		return State{}, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("read state %s: %w", path, err)
	}
	if s.Registrations == nil {
		var old legacyState
		if err := json.Unmarshal(b, &old); err != nil {
			return State{}, fmt.Errorf("read state %s: %w", path, err)
		}
		s = migrate(s, old)
	}
	if s.Server == "" || len(s.Registrations) == 0 {
		return State{}, fmt.Errorf("%w (%s lacks server or token)", ErrNotRegistered, path)
	}
	return s, nil
}

// migrate turns a one-server state into the current form: its token is
// the registration at its server, which is the only node known until the
// first call learns the rest. Such a machine has no enrollment token, so it
// can use other nodes only once it is registered there anew.
func migrate(s State, old legacyState) State {
	s.Registrations = map[string]NodeRegistration{}
	if s.Server == "" || old.MachineToken == "" {
		return s
	}
	s.Server = strings.TrimRight(s.Server, "/")
	s.Registrations[s.Server] = NodeRegistration{MachineToken: old.MachineToken, MachineID: s.MachineID, Registered: s.Registered}
	s.Nodes = []Node{{URL: s.Server}}
	s.RerankDue = true
	return s
}

// saveState writes the registration atomically, mode 0600 in a 0700
// directory, so that a crash leaves the old file or the new one, never a
// torn one, and no other user can read the token.
func saveState(dir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := ensureDir(dir); err != nil {
		return err
	}
	return writeFileAtomic(dir, StateFile, append(b, '\n'))
}

// ensureDir creates dir with mode 0700, and narrows it to 0700 if it
// exists: the state directory is the client's own and holds a secret.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to dir/name through a synced temporary file
// and a rename. The file has mode 0600.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename inside dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
