package replicate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

// Has asks src, with a HEAD request, whether it serves d. It moves no blob
// bytes, so a node can ask a peer cheaply until the peer has a blob. With
// wait > 0 the request asks src to hold its answer until it has d, for up
// to wait (?wait=, on the peer endpoint): one long request instead of
// many short ones. A node that does not know the parameter, or caps it,
// answers sooner, so a caller keeps its own pace between asks. ctx must
// outlast wait. A 404 is (false, nil); a refused token wraps
// ErrUnauthorized; any other failure is an error. A malformed digest or
// source fails before any request.
func (r *Replicator) Has(ctx context.Context, src Source, d blob.Digest, wait time.Duration) (bool, error) {
	src, err := checkSource(src)
	if err != nil {
		return false, err
	}
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return false, fmt.Errorf("replicate: %w", err)
	}
	u := src.BlobURL(d)
	if wait > 0 {
		u += "?" + url.Values{"wait": {wait.String()}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return false, fmt.Errorf("replicate: request: %w", err)
	}
	if src.Token != "" {
		req.Header.Set("Authorization", "Bearer "+src.Token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		// *url.Error quotes the URL, never the headers.
		return false, fmt.Errorf("replicate: ask %s for %s: %w", src.BaseURL, d, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return true, nil
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return false, fmt.Errorf("replicate: ask %s for %s: %w: %s", src.BaseURL, d, ErrUnauthorized, resp.Status)
	}
	return false, fmt.Errorf("replicate: ask %s for %s: answered %s", src.BaseURL, d, resp.Status)
}

// Missing returns the wants not present in the local store, in order, so
// that a caller about to wait for a peer to have them waits only for those.
func (r *Replicator) Missing(ctx context.Context, want []Want) ([]Want, error) {
	var out []Want
	for _, w := range want {
		_, err := r.blobs.Stat(ctx, w.Digest)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			out = append(out, w)
		case err != nil:
			return nil, fmt.Errorf("replicate: stat %s: %w", w.Digest, err)
		}
	}
	return out, nil
}
