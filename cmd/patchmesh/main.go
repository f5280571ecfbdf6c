// Command patchmesh is the one patchmesh binary: `patchmesh serve` runs a
// node, `patchmesh admin` drives a node's admin API, `patchmesh client` is
// the machine side (register, refresh, status), `patchmesh hub-key` prints
// (making it if needed) the hub's public signing key, `patchmesh node-key`
// the node's identity key, `patchmesh gossip-key` makes a key for the
// gossip keyring, `patchmesh storage copy` moves patch files between blob
// stores, and `patchmesh version` says what was built.
//
// Exit codes: 0 success, 2 a usage or configuration error, 1 any other
// failure; admin and client add codes of their own for auth, not-found and
// rejected input (see their help).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
)

// version is set at build time:
//
//	go build -ldflags "-X main.version=1.2.3" ./cmd/patchmesh
var version = "dev"

// mainUsage is the top-level help. The admin command groups in it come
// from adminCommands, so that a new command is never missing here.
var mainUsage = strings.Replace(mainUsageText, "{admin}\n", wrapList(adminGroups(), 34, 94), 1)

const mainUsageText = `patchmesh — federated kernel live-patch distribution

Usage:
  patchmesh serve [--config FILE] [--listen ADDR] [--data-dir DIR] [--log-level LEVEL]
                                  run a node (no config: SQLite and files under the default data dir)
  patchmesh admin --server URL COMMAND ...
                                  administer a node:
{admin}
  patchmesh hub-key [--key FILE]  print the hub's public signing key, creating the key file if
                                  missing (default: hub.key in the default data dir)
  patchmesh node-key [--key FILE] print the node's public identity key, creating the key file if
                                  missing (default: node.key in the default data dir); the hub
                                  admits the node by it
  patchmesh join --config FILE --token-file FILE
                                  join the mesh with a one-time token from the hub (admin nodes
                                  join-token); the hub admits the node under its key
  patchmesh gossip-key            print a new random gossip key (base64) for gossip.keys or
                                  the keyring file
  patchmesh storage copy --from CONFIG --to CONFIG
                                  copy every patch file between two nodes' blob stores
                                  (fs, postgres, s3, swift), verified and resumable
  patchmesh client --server URL COMMAND ...
                                  the machine side: register, refresh, status, nodes
  patchmesh version [--output json]
                                  print the version
  patchmesh completion bash|zsh|fish
                                  print a shell completion script

Run 'patchmesh COMMAND --help' for a command's options.
`

// adminGroups is the first word of every admin command, in their order.
func adminGroups() []string {
	var out []string
	for _, c := range adminCommands {
		g, _, _ := strings.Cut(c.name, " ")
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// wrapList joins words with ", " into lines of at most width columns,
// each indented by indent spaces and ending in a newline.
func wrapList(words []string, indent, width int) string {
	var b strings.Builder
	line := ""
	for i, w := range words {
		if i < len(words)-1 {
			w += ","
		}
		if line != "" && indent+len(line)+1+len(w) > width {
			b.WriteString(strings.Repeat(" ", indent) + line + "\n")
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	b.WriteString(strings.Repeat(" ", indent) + line + "\n")
	return b.String()
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, os.Getenv, stdout, stderr)
	case "admin":
		return runAdmin(ctx, rest, stdout, stderr)
	case "client":
		return runClient(ctx, rest, stdout, stderr)
	case "hub-key":
		return runHubKey(rest, os.Getenv, stdout, stderr)
	case "gossip-key":
		return runGossipKey(rest, stdout, stderr)
	case "node-key":
		return runNodeKey(rest, os.Getenv, stdout, stderr)
	case "join":
		return runJoin(ctx, rest, os.Getenv, stdout, stderr)
	case "completion":
		return runCompletion(rest, stdout, stderr)
	case "storage":
		return runStorage(ctx, rest, stdout, stderr)
	case "version", "--version":
		return runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "patchmesh: unknown command %q\n\n%s", cmd, mainUsage)
		return exitUsage
	}
}

// buildInfo is what `patchmesh version` reports.
type buildInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	Platform  string `json:"platform"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	return b
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	asJSON := false
	switch {
	case len(args) == 0:
	case len(args) == 2 && args[0] == "--output" && (args[1] == "json" || args[1] == "text"):
		asJSON = args[1] == "json"
	case len(args) == 1 && (args[0] == "--output=json" || args[0] == "--output=text"):
		asJSON = args[0] == "--output=json"
	default:
		fmt.Fprintln(stderr, "usage: patchmesh version [--output text|json]")
		return exitUsage
	}
	b := readBuildInfo()
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(b); err != nil {
			return exitServer
		}
		return exitOK
	}
	line := fmt.Sprintf("patchmesh %s (%s, %s", b.Version, b.GoVersion, b.Platform)
	if b.Revision != "" {
		line += ", revision " + b.Revision
		if b.Modified {
			line += "+modified"
		}
	}
	fmt.Fprintln(stdout, line+")")
	return exitOK
}
