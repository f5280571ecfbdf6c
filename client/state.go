package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// StateFile is the name of the registration file inside the state directory.
const StateFile = "state.json"

// State is what a machine keeps between runs. The raw machine ID is not
// here: it goes to the server once, at registration.
type State struct {
	// Server is the node the machine registered with.
	Server string `json:"server"`
	// MachineToken is the machine's bearer credential (pmm_…).
	MachineToken string `json:"machine_token"`
	// Tier is the tier the machine was registered on.
	Tier string `json:"tier"`
	// MachineID is the server's name for the machine: the HMAC of its ID.
	MachineID string `json:"machine_id"`
	// Registered is when the machine registered.
	Registered time.Time `json:"registered"`
}

// LoadState reads the state directory's registration. ErrNotRegistered if
// there is none.
func LoadState(dir string) (State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, fmt.Errorf("%w (no %s in %s)", ErrNotRegistered, StateFile, dir)
	}
	if err != nil {
		return State{}, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("read state %s: %w", filepath.Join(dir, StateFile), err)
	}
	if s.Server == "" || s.MachineToken == "" {
		return State{}, fmt.Errorf("%w (%s lacks server or token)", ErrNotRegistered, filepath.Join(dir, StateFile))
	}
	return s, nil
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
