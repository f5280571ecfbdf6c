package blob

import (
	"context"
	"errors"
	"fmt"
)

// CopyStats counts what Copy did.
type CopyStats struct {
	// Copied blobs were sent to dst; Skipped ones were there already, with
	// the same size; Failed ones could not be copied (see the error).
	Copied, Skipped, Failed int
	// Bytes is how many bytes Copied blobs held.
	Bytes int64
}

// Copy copies every blob of src that dst lacks into dst, in digest order,
// through Put, so each one is verified against its digest on the way; a
// source blob that does not hash to its name fails and is not copied.
//
// It is resumable: a blob dst already has (with the source's size) is
// skipped, so running Copy again after an interruption sends only the
// rest. A blob that fails does not stop the others; their errors are
// joined. progress, if not nil, is called after each blob.
func Copy(ctx context.Context, dst, src Store, progress func(Info, CopyStats, error)) (CopyStats, error) {
	var st CopyStats
	var errs []error
	err := src.Enumerate(ctx, func(i Info) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := copyOne(ctx, dst, src, i, &st)
		if err != nil {
			st.Failed++
			errs = append(errs, err)
		}
		if progress != nil {
			progress(i, st, err)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("blob copy: list source: %w", err))
	}
	return st, errors.Join(errs...)
}

func copyOne(ctx context.Context, dst, src Store, i Info, st *CopyStats) error {
	if have, err := dst.Stat(ctx, i.Digest); err == nil && have.Size == i.Size {
		st.Skipped++
		return nil
	} else if err == nil {
		return fmt.Errorf("blob copy %s: the destination holds %d bytes under this digest, the source %d: one is corrupt", i.Digest, have.Size, i.Size)
	} else if !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("blob copy %s: %w", i.Digest, err)
	}
	r, _, err := src.Open(ctx, i.Digest)
	if err != nil {
		return fmt.Errorf("blob copy %s: %w", i.Digest, err)
	}
	defer r.Close()
	info, err := Put(ctx, dst, i.Digest, r)
	if err != nil {
		return fmt.Errorf("blob copy: %w", err)
	}
	st.Copied++
	st.Bytes += info.Size
	return nil
}
