package main

// Plumbing shared by `patchmesh admin` and `patchmesh client`: exit codes,
// flag parsing that accepts flags after the command, output helpers and
// terminal progress.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/client"
)

// Exit codes of `patchmesh admin` and `patchmesh client`. Scripts branch on
// them, so they never change meaning.
const (
	exitOK       = 0 // success
	exitServer   = 1 // server or network error, refused patch, failed apply hook
	exitUsage    = 2 // bad command line
	exitAuth     = 3 // 401/403, or not logged in / not registered
	exitNotFound = 4 // 404
	exitConflict = 5 // 409
	exitInvalid  = 6 // 400, 413, 422: the server (or a local check) refused the input
	exitStale    = 7 // client refresh: no node handed over a fresh hub heartbeat
)

// usageError is a command-line mistake (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errNoMatch means no record matches what a command named (a digest
// prefix, say): a not-found of the tool's own.
var errNoMatch = errors.New("no match")

// errNotLoggedIn means the admin tool holds no usable macaroon for the server.
var errNotLoggedIn = errors.New("not logged in")

// exitCode maps an error to the exit code scripts see.
func exitCode(err error) int {
	var (
		ue     *usageError
		apiErr *client.APIError
		inv    *catalog.InvalidError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, client.ErrOfferRefused), errors.Is(err, client.ErrDigestMismatch), errors.Is(err, client.ErrApplyFailed):
		// Worse than being stale, which such a refresh may be too.
		return exitServer
	case errors.Is(err, client.ErrStale):
		return exitStale
	case errors.As(err, &ue), errors.Is(err, client.ErrInsecureURL):
		return exitUsage
	case errors.As(err, &apiErr):
		switch apiErr.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			return exitAuth
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusConflict:
			return exitConflict
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			return exitInvalid
		}
		return exitServer
	case errors.As(err, &inv):
		return exitInvalid
	case errors.Is(err, errNotLoggedIn), errors.Is(err, client.ErrNotRegistered):
		return exitAuth
	case errors.Is(err, errNoContext), errors.Is(err, errNoMatch):
		return exitNotFound
	}
	return exitServer
}

// errorBody is the JSON error envelope the tools print under --output
// json: the node's envelope (docs/api.md) when the node answered, else one
// of the same shape for a failure of the tool's own, with the exit code
// either way.
type errorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		Field     string `json:"field,omitempty"`
		Status    int    `json:"status,omitempty"`
		RequestID string `json:"request_id,omitempty"`
		ExitCode  int    `json:"exit_code"`
	} `json:"error"`
}

// errorJSON makes err's envelope. The node's code is kept as it is; the
// tool's own failures get codes named after their exit codes.
func errorJSON(err error, exit int) errorBody {
	var b errorBody
	b.Error.Message = err.Error()
	b.Error.ExitCode = exit
	var (
		apiErr *client.APIError
		inv    *catalog.InvalidError
	)
	switch {
	case errors.As(err, &apiErr):
		b.Error.Code = apiErr.Code
		if b.Error.Code == "" {
			b.Error.Code = "http_" + strconv.Itoa(apiErr.Status)
		}
		b.Error.Field, b.Error.Status, b.Error.RequestID = apiErr.Field, apiErr.Status, apiErr.RequestID
		return b
	case errors.As(err, &inv):
		b.Error.Code, b.Error.Field = "invalid_input", inv.Field
		return b
	}
	if errors.Is(err, client.ErrNotRegistered) {
		b.Error.Code = "not_registered"
		return b
	}
	b.Error.Code = map[int]string{
		exitUsage: "usage", exitAuth: "not_logged_in", exitNotFound: "not_found",
		exitConflict: "conflict", exitInvalid: "invalid_input",
	}[exit]
	if b.Error.Code == "" {
		b.Error.Code = "failed"
	}
	return b
}

// newFlagSet makes a flag set whose errors and help the caller reports.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseArgs parses flags wherever they stand among args, so that
// `tiers add canary --output json` works like `--output json tiers add
// canary`, and returns the positional arguments. "--" ends the flags.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for range len(args) + 1 { // each round consumes at least one argument
		if len(args) == 0 {
			break
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}

// wantArgs checks the number of positional arguments.
func wantArgs(cmd string, args []string, names ...string) error {
	if len(args) != len(names) {
		if len(names) == 0 {
			return usagef("%s takes no arguments, got %q", cmd, strings.Join(args, " "))
		}
		return usagef("usage: %s %s", cmd, strings.Join(names, " "))
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// outputFlag is --output text|json|csv; csv is for the report commands.
type outputFlag string

func (o *outputFlag) String() string { return string(*o) }
func (o *outputFlag) Set(v string) error {
	if v != "text" && v != "json" && v != "csv" {
		return errors.New(`must be "text", "json" or "csv"`)
	}
	*o = outputFlag(v)
	return nil
}

// printJSON writes raw JSON indented, or v encoded when raw is nil.
func printJSON(w io.Writer, raw []byte, v any) error {
	if raw == nil {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		// Not JSON after all: show it as it came.
		_, err = w.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}

// table prints aligned columns. Cells are cleaned of control characters:
// they come from the server, and a tab would break the alignment, an
// escape sequence the operator's terminal.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = strings.Map(func(r rune) rune {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
					return ' '
				}
				return r
			}, c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// fmtTime shows a time in UTC, "-" when unset.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtSize shows a byte count in binary units.
func fmtSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// isTerminal reports whether f is an *os.File on a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}

// progress draws a one-line byte counter on a terminal, redrawn at most ten
// times a second. A nil *progress draws nothing, so callers need not check.
type progress struct {
	w     io.Writer
	label string
	now   func() time.Time
	last  time.Time
	drawn bool
}

// newProgress returns a progress line on w when w is a terminal, else nil.
func newProgress(w io.Writer, label string) *progress {
	if !isTerminal(w) {
		return nil
	}
	return &progress{w: w, label: label, now: time.Now}
}

// update redraws the line if a tenth of a second has passed, or at the end.
func (p *progress) update(done, total int64) {
	if p == nil {
		return
	}
	now := p.now()
	if p.drawn && now.Sub(p.last) < 100*time.Millisecond && done != total {
		return
	}
	p.last, p.drawn = now, true
	if total > 0 {
		fmt.Fprintf(p.w, "\r%s %s / %s (%d%%)\x1b[K", p.label, fmtSize(done), fmtSize(total), done*100/total)
	} else {
		fmt.Fprintf(p.w, "\r%s %s\x1b[K", p.label, fmtSize(done))
	}
}

// finish ends the line.
func (p *progress) finish() {
	if p != nil && p.drawn {
		fmt.Fprintln(p.w)
	}
}

// countingReader reports the bytes read through it.
type countingReader struct {
	r     io.Reader
	done  int64
	total int64
	fn    func(done, total int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.done += int64(n)
	if n > 0 {
		c.fn(c.done, c.total)
	}
	return n, err
}
