package main

// `patchmesh serve`: load the config (defaults < file < environment <
// flags), run a node, drain it on SIGINT or SIGTERM.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/patchmesh/patchmesh/node"
)

// serveOptions are the flags of `patchmesh serve`. Empty means not given.
type serveOptions struct {
	config      string
	listen      string
	dataDir     string
	logLevel    string
	printConfig bool
	cpuProfile  string
	memProfile  string
}

// errServeHelp means --help was asked for.
var errServeHelp = errors.New("help requested")

func serveFlagSet(o *serveOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("patchmesh serve", flag.ContinueOnError)
	// Errors and help are reported by runServe: help to stdout, errors to
	// stderr.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.config, "config", "", "YAML config `file` (default $PATCHMESH_CONFIG; none: built-in defaults)")
	fs.StringVar(&o.listen, "listen", "", "`host:port` to serve on, overrides server.listen")
	fs.StringVar(&o.dataDir, "data-dir", "", "`dir` for the database and blobs, overrides node.data_dir")
	fs.StringVar(&o.logLevel, "log-level", "", "`level`: debug, info, warn or error; overrides log.level")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the effective config as YAML (DSN password hidden) and exit")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (pprof) of the whole run to `file`, for benchmarks")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile (pprof) to `file` when the node stops, for benchmarks")
	return fs
}

// serveUsage writes the help of `patchmesh serve`.
func serveUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: patchmesh serve [flags]

Runs a patchmesh node. With no config at all it keeps its data in SQLite and
files under the default data dir and listens on 127.0.0.1:8080.
Precedence, lowest first: defaults < config file < environment < flags.
Every option is documented, with its default, in examples/patchmesh.yaml.

Flags:
`)
	var o serveOptions
	fs := serveFlagSet(&o)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nEnvironment (one variable per config option):\n  PATCHMESH_CONFIG (--config)\n")
	for _, v := range node.EnvVars() {
		fmt.Fprintf(w, "  %s\n", v)
	}
}

// serveConfig builds the effective config from the command line and the
// environment. An error is the operator's to fix (exit 2).
func serveConfig(args []string, getenv func(string) string) (node.Config, serveOptions, error) {
	var o serveOptions
	fs := serveFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return node.Config{}, o, errServeHelp
		}
		return node.Config{}, o, err
	}
	if fs.NArg() > 0 {
		return node.Config{}, o, fmt.Errorf("serve takes no arguments, got %q", strings.Join(fs.Args(), " "))
	}
	if o.config == "" {
		o.config = getenv("PATCHMESH_CONFIG")
	}

	cfg := node.DefaultsWithEnv(getenv)
	if o.config != "" {
		if err := cfg.LoadFile(o.config); err != nil {
			return node.Config{}, o, err
		}
	}
	if err := cfg.ApplyEnv(getenv); err != nil {
		return node.Config{}, o, fmt.Errorf("environment: %w", err)
	}
	if o.listen != "" {
		cfg.Server.Listen = o.listen
	}
	if o.dataDir != "" {
		cfg.Node.DataDir = o.dataDir
	}
	if o.logLevel != "" {
		cfg.Log.Level = o.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return node.Config{}, o, fmt.Errorf("invalid config:\n%w", err)
	}
	return cfg, o, nil
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, opts, err := serveConfig(args, getenv)
	switch {
	case errors.Is(err, errServeHelp):
		serveUsage(stdout)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "patchmesh serve: %v\nRun 'patchmesh serve --help' for usage.\n", err)
		return exitUsage
	}
	if opts.printConfig {
		return printConfig(cfg, stdout, stderr)
	}

	log, err := node.NewLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "patchmesh serve: %v\n", err)
		return exitUsage
	}
	node.Version = version

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal starts the drain, a second one kills
		// the process at once, as an operator pressing ^C twice expects.
		<-ctx.Done()
		stop()
	}()

	if opts.cpuProfile != "" {
		// A file the operator names, written until the node stops: no
		// endpoint serves profiles, so none can be fetched over the network.
		f, err := os.OpenFile(opts.cpuProfile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "patchmesh serve: --cpuprofile: %v\n", err)
			return exitUsage
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var memProfile *os.File
	if opts.memProfile != "" {
		// Opened now, so that a bad path fails the start, not the stop.
		f, err := os.OpenFile(opts.memProfile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "patchmesh serve: --memprofile: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		memProfile = f
	}
	n, err := node.New(ctx, cfg, log, node.WithConsole(stderr))
	if err != nil {
		log.Error("node_start_failed", "error", err.Error())
		fmt.Fprintf(stderr, "patchmesh serve: %v\n", err)
		return exitServer
	}
	err = n.Run(ctx)
	if memProfile != nil {
		// After a collection the profile's in-use figures are what the
		// stopped node still holds, its caches among it: n is kept alive
		// until the profile is written.
		runtime.GC()
		if err := pprof.Lookup("heap").WriteTo(memProfile, 0); err != nil {
			fmt.Fprintf(stderr, "patchmesh serve: --memprofile: %v\n", err)
		}
		runtime.KeepAlive(n)
	}
	if err != nil {
		log.Error("node_failed", "error", err.Error())
		fmt.Fprintf(stderr, "patchmesh serve: %v\n", err)
		return exitServer
	}
	return exitOK
}

// printConfig writes the effective config, so that an operator can see
// what the layers added up to. The DSN password is hidden.
func printConfig(cfg node.Config, stdout, stderr io.Writer) int {
	cfg.Store.DSN = cfg.RedactedDSN()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "patchmesh serve: %v\n", err)
		return exitServer
	}
	stdout.Write(b)
	return exitOK
}
