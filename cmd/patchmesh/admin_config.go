package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// adminConfigFile is the file, in the admin config directory, that keeps a
// login.
const adminConfigFile = "admin.json"

// adminLogin is what `patchmesh admin login` keeps: a bearer secret, hence
// mode 0600 in a 0700 directory.
type adminLogin struct {
	Server   string    `json:"server"`
	User     string    `json:"user"`
	Macaroon string    `json:"macaroon"`
	Expires  time.Time `json:"expires"`
}

// adminConfigDir is $PATCHMESH_CONFIG_DIR, else the user's config
// directory's patchmesh folder.
func adminConfigDir(getenv func(string) string) (string, error) {
	if d := getenv("PATCHMESH_CONFIG_DIR"); d != "" {
		return d, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory (set PATCHMESH_CONFIG_DIR): %w", err)
	}
	return filepath.Join(base, "patchmesh"), nil
}

// loadLogin reads the saved login; errNotLoggedIn when there is none.
func loadLogin(dir string) (adminLogin, error) {
	b, err := os.ReadFile(filepath.Join(dir, adminConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return adminLogin{}, fmt.Errorf("%w: run patchmesh admin login", errNotLoggedIn)
	}
	if err != nil {
		return adminLogin{}, fmt.Errorf("read login: %w", err)
	}
	var l adminLogin
	if err := json.Unmarshal(b, &l); err != nil || l.Macaroon == "" {
		return adminLogin{}, fmt.Errorf("%w: %s is damaged; run patchmesh admin login", errNotLoggedIn, filepath.Join(dir, adminConfigFile))
	}
	return l, nil
}

// saveLogin writes the login atomically: a crash leaves the old file or the
// new one, and the secret is never readable by others, not even briefly.
func saveLogin(dir string, l adminLogin) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, adminConfigFile), append(b, '\n'))
}

// removeLogin deletes the saved login; it is not an error if there is none.
func removeLogin(dir string) (removed bool, err error) {
	err = os.Remove(filepath.Join(dir, adminConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("log out: %w", err)
	}
	return true, nil
}

// writeFileAtomic writes data to path, mode 0600, through a synced
// temporary file in the same directory and a rename.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
