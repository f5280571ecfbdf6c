package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/node"
)

const storageUsage = `Usage: patchmesh storage copy --from CONFIG --to CONFIG [--output text|json]

Copies every patch file from the blob store the node config --from names
to the one --to names (any drivers: fs, postgres, s3, swift), offline: run
it with the nodes stopped, or with the source node still serving and again
after switching it over. Each blob is verified against its digest on the
way and a source blob that fails the check is not copied. Blobs the
destination already has are skipped, so an interrupted copy resumes where
it stopped. Only the blobs section (and store.dsn, for postgres) of each
config is used; the environment does not override them.
`

// runStorage is `patchmesh storage`: offline work on a node's blob store.
func runStorage(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "copy" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
			fmt.Fprint(stdout, storageUsage)
			return exitOK
		}
		fmt.Fprint(stderr, storageUsage)
		return exitUsage
	}
	fs := newFlagSet("patchmesh storage copy")
	from := fs.String("from", "", "node config `file` of the source")
	to := fs.String("to", "", "node config `file` of the destination")
	var output outputFlag = "text"
	fs.Var(&output, "output", "text or json")
	err := func() error {
		pos, err := parseArgs(fs, args[1:])
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh storage copy", pos); err != nil {
			return err
		}
		if *from == "" || *to == "" {
			return &usageError{"both --from and --to are required"}
		}
		log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		open := func(path string, source bool) (blob.Store, io.Closer, error) {
			cfg, err := node.Load(path)
			if err != nil {
				return nil, nil, err
			}
			// Opening a file store makes its directories: a mistyped
			// source would copy nothing, say so as a success, and leave
			// an empty store behind.
			if source && cfg.Blobs.Driver == node.DriverFS {
				if _, err := os.Stat(cfg.BlobPath()); err != nil {
					return nil, nil, &usageError{fmt.Sprintf("--from %s: no blob directory to copy from: %v", path, err)}
				}
			}
			s, c, err := node.OpenBlobStore(ctx, cfg, log)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", path, err)
			}
			return s, c, nil
		}
		src, sc, err := open(*from, true)
		if err != nil {
			return err
		}
		defer sc.Close()
		dst, dc, err := open(*to, false)
		if err != nil {
			return err
		}
		defer dc.Close()
		st, err := blob.Copy(ctx, dst, src, func(i blob.Info, _ blob.CopyStats, err error) {
			if err != nil && output != "json" {
				fmt.Fprintf(stderr, "failed %s: %v\n", i.Digest, err)
			}
		})
		if output == "json" {
			if perr := printJSON(stdout, nil, struct {
				Copied  int   `json:"copied"`
				Skipped int   `json:"skipped"`
				Failed  int   `json:"failed"`
				Bytes   int64 `json:"bytes"`
			}{st.Copied, st.Skipped, st.Failed, st.Bytes}); perr != nil {
				return perr
			}
		} else {
			fmt.Fprintf(stdout, "Copied %d blob(s) (%d bytes), skipped %d already there, %d failed.\n",
				st.Copied, st.Bytes, st.Skipped, st.Failed)
		}
		if err != nil {
			return fmt.Errorf("%d blob(s) not copied; run again to retry them: %w", st.Failed, err)
		}
		return nil
	}()
	return finish("patchmesh storage copy", storageUsage, err, stdout, stderr)
}
