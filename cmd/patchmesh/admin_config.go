package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// adminConfigFile is the file, in the admin config directory, that keeps
// the logins.
const adminConfigFile = "admin.json"

// adminLogin is one kept login: a bearer secret, hence mode 0600 in a 0700
// directory.
type adminLogin struct {
	Server   string    `json:"server"`
	User     string    `json:"user"`
	Macaroon string    `json:"macaroon"`
	Expires  time.Time `json:"expires"`
}

// adminConfig is the admin tool's file: one login per context name, and
// the context a command uses when nothing else names one.
type adminConfig struct {
	Current  string                `json:"current,omitempty"`
	Contexts map[string]adminLogin `json:"contexts"`
}

// errNoContext is a context name the config file does not hold.
var errNoContext = errors.New("no such context")

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

// loadConfig reads the config file; a missing file is an empty config. A
// file of the single-login format patchmesh used before contexts is read
// as one context named after its server, the current one; the next save
// writes it in the new format.
func loadConfig(dir string) (adminConfig, error) {
	path := filepath.Join(dir, adminConfigFile)
	cfg := adminConfig{Contexts: map[string]adminLogin{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read logins: %w", err)
	}
	var file struct {
		adminConfig
		adminLogin // the old single-login format
	}
	if err := json.Unmarshal(b, &file); err != nil {
		return cfg, fmt.Errorf("%w: %s is damaged (%v); remove it and run patchmesh admin login", errNotLoggedIn, path, err)
	}
	switch {
	case file.Contexts != nil:
		cfg.Current = file.Current
		for name, l := range file.Contexts {
			if l.Macaroon != "" && validContextName(name) == nil {
				cfg.Contexts[name] = l
			}
		}
		if _, ok := cfg.Contexts[cfg.Current]; !ok {
			cfg.Current = ""
		}
	case file.Macaroon != "" && file.Server != "":
		name := contextName(file.Server)
		cfg.Contexts[name] = file.adminLogin
		cfg.Current = name
	}
	return cfg, nil
}

// saveConfig writes the config atomically: a crash leaves the old file or
// the new one, and the secrets are never readable by others, not even
// briefly. A config with no login left removes the file.
func saveConfig(dir string, cfg adminConfig) error {
	if len(cfg.Contexts) == 0 {
		err := os.Remove(filepath.Join(dir, adminConfigFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", adminConfigFile, err)
		}
		return nil
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
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

// updateConfig changes the config file under an exclusive lock on its
// directory: commands run side by side (a script logging in to every node
// at once) each read, change and write the file in turn, so no login is
// lost. The directory itself is locked, so no lock file is left behind.
func updateConfig(dir string, change func(cfg *adminConfig) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	defer d.Close() // closing releases the lock
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return err
	}
	if err := change(&cfg); err != nil {
		return err
	}
	return saveConfig(dir, cfg)
}

// contextName is the default context name for a server: its host and
// port, e.g. "hub.example.com:8443".
func contextName(server string) string {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return "default"
	}
	name := strings.Map(func(r rune) rune {
		if strings.ContainsRune(contextNameChars, r) {
			return r
		}
		return '-'
	}, strings.ToLower(u.Host))
	if len(name) > maxContextName {
		name = name[:maxContextName]
	}
	return name
}

const (
	contextNameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-"
	maxContextName   = 64
)

// validContextName checks a context name: 1 to 64 letters, digits and
// . _ : @ -, so that it is safe in a table, a prompt and a shell word.
func validContextName(name string) error {
	if name == "" || len(name) > maxContextName || strings.Trim(name, contextNameChars) != "" {
		return usagef("context name %q: want 1 to %d letters, digits or . _ : @ -", name, maxContextName)
	}
	return nil
}

// byServer finds the context for a server: the current context if it is
// for that server, else the only one that is. "" when none is.
func (cfg adminConfig) byServer(server string) (string, error) {
	if l, ok := cfg.Contexts[cfg.Current]; ok && l.Server == server {
		return cfg.Current, nil
	}
	var names []string
	for name, l := range cfg.Contexts {
		if l.Server == server {
			names = append(names, name)
		}
	}
	switch len(names) {
	case 0:
		return "", nil
	case 1:
		return names[0], nil
	}
	sort.Strings(names)
	return "", usagef("%d contexts are logged in to %s (%s): choose one with --context", len(names), server, strings.Join(names, ", "))
}

// chosen is the context and server a command goes to.
type chosen struct {
	name   string // "" when no kept login matches
	server string
}

// choose picks the context a command uses: --context, else the context of
// --server, else $PATCHMESH_CONTEXT, else the context of $PATCHMESH_URL,
// else the current context, else the only one. Flags beat the
// environment. A named context must exist; a server with no context is
// returned with an empty name, for login and hub-key.
func (a *admin) choose(cfg adminConfig) (chosen, error) {
	named := func(name, server string) (chosen, error) {
		if err := validContextName(name); err != nil {
			return chosen{}, err
		}
		l, ok := cfg.Contexts[name]
		if !ok {
			return chosen{name: name, server: server}, fmt.Errorf("%w %q: see patchmesh admin context list, or log in with --context %s", errNoContext, name, name)
		}
		if server != "" && server != l.Server {
			return chosen{}, fmt.Errorf("%w to %s: context %s is for %s", errNotLoggedIn, server, name, l.Server)
		}
		return chosen{name: name, server: l.Server}, nil
	}
	atServer := func(raw string) (chosen, error) {
		server, err := normalizeServer(raw)
		if err != nil {
			return chosen{}, err
		}
		name, err := cfg.byServer(server)
		return chosen{name: name, server: server}, err
	}
	server := ""
	if a.server != "" {
		var err error
		if server, err = normalizeServer(a.server); err != nil {
			return chosen{}, err
		}
	}
	switch {
	case a.context != "":
		return named(a.context, server)
	case server != "":
		return atServer(server)
	case a.getenv("PATCHMESH_CONTEXT") != "":
		return named(a.getenv("PATCHMESH_CONTEXT"), "")
	case a.getenv("PATCHMESH_URL") != "":
		return atServer(a.getenv("PATCHMESH_URL"))
	case cfg.Current != "":
		return chosen{name: cfg.Current, server: cfg.Contexts[cfg.Current].Server}, nil
	case len(cfg.Contexts) == 1:
		for name, l := range cfg.Contexts {
			return chosen{name: name, server: l.Server}, nil
		}
	case len(cfg.Contexts) > 1:
		return chosen{}, usagef("no current context: choose one with --context or patchmesh admin context use NAME")
	}
	return chosen{}, usagef("no server: give --server URL or --context NAME, or set PATCHMESH_URL")
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
