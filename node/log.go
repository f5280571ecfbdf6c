package node

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/patchmesh/patchmesh/api"
)

// NewLogger builds the node's structured logger as cfg asks, writing to w.
func NewLogger(cfg LogConfig, w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch cfg.Format {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log.format: must be json or text, got %q", cfg.Format)
	}
	return slog.New(logHandler(h)), nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("must be debug, info, warn or error, got %q", s)
}

// logHandler is where the API's request-scoped attributes join every
// log line.
func logHandler(h slog.Handler) slog.Handler { return api.NewLogHandler(h) }
