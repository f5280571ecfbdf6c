package packaging

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/node"
)

// containerEnv reads the ENV instructions of a Containerfile (KEY=VALUE
// pairs, lines joined at a trailing backslash). Values with spaces or
// quotes are not used by ours and are refused rather than misread.
func containerEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.ReplaceAll(string(raw), "\\\n", " ")
	env := map[string]string{}
	for line := range strings.Lines(joined) {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.EqualFold(fields[0], "ENV") {
			continue
		}
		for _, kv := range fields[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.ContainsAny(v, `"'`) {
				t.Fatalf("%s: ENV %q: want KEY=VALUE without quotes", path, kv)
			}
			env[k] = v
		}
	}
	return env
}

// TestContainerEnv checks the binary's side of the Containerfile, which
// cannot be built here without a container engine: a node reads no
// unknown PATCHMESH_ variable (a misspelt one would be silently ignored),
// so every ENV the image sets must be an option the binary knows, and
// together they must make the node listen on every interface with its data
// in the volume.
func TestContainerEnv(t *testing.T) {
	env := containerEnv(t, "Containerfile")
	known := []string{"PATCHMESH_DATA_DIR", "PATCHMESH_CONFIG"}
	for _, v := range node.EnvVars() {
		name, _, _ := strings.Cut(v, " ")
		known = append(known, name)
	}
	for k := range env {
		if strings.HasPrefix(k, "PATCHMESH_") && !slices.Contains(known, k) {
			t.Errorf("Containerfile: ENV %s is not an option patchmesh reads", k)
		}
	}
	cfg := node.DefaultsWithEnv(func(k string) string { return env[k] })
	if err := cfg.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatalf("Containerfile ENV: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Containerfile ENV: %v", err)
	}
	if cfg.Server.Listen != "0.0.0.0:8080" {
		t.Errorf("Containerfile: want the node listening on 0.0.0.0:8080, got %s", cfg.Server.Listen)
	}
	raw, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	if want := `VOLUME ["` + cfg.Node.DataDir + `"]`; !strings.Contains(string(raw), want) {
		t.Errorf("Containerfile: data dir %s is not the volume: want %s", cfg.Node.DataDir, want)
	}
}
