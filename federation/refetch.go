package federation

import (
	"context"
	"errors"
	"fmt"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/replicate"
)

// Refetch fetches blobs again that records applied here name but the blob
// store lost (a storage refresh with repair): from each link's current
// upstream in turn, until every one is present. sizes maps each digest to
// its size from the signed record, which caps what is read. The digest is
// checked by blob.Put as for any fetch. It returns the errors met; the
// caller checks the store for what is there now.
func (p *Puller) Refetch(ctx context.Context, sizes map[blob.Digest]int64) error {
	pending := make([]replicate.Want, 0, len(sizes))
	for d, n := range sizes {
		pending = append(pending, replicate.Want{Digest: d, Size: n})
	}
	var errs []error
	for _, l := range p.links {
		if len(pending) == 0 {
			break
		}
		up, _ := l.choose(p.cfg.Now(), p.cfg.Health)
		_, err := p.cfg.Fetcher.Fetch(ctx, replicate.Source{BaseURL: up.URL, Token: up.Token}, pending)
		if err != nil {
			errs = append(errs, fmt.Errorf("from %s: %w", up.URL, err))
		}
		pf, ok := p.cfg.Fetcher.(PeerFetcher)
		if !ok {
			continue
		}
		if pending, err = pf.Missing(ctx, pending); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	return errors.Join(errs...)
}
