package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256>".
	SignatureHeader = "Patchmesh-Signature"
	// EventHeader names the event; DeliveryHeader carries the event's ID,
	// the same on every retry, for a receiver to drop repeats.
	EventHeader    = "Patchmesh-Event"
	DeliveryHeader = "Patchmesh-Delivery"
)

// ReplayWindow is how old a signature's timestamp a receiver should still
// accept. Every attempt is signed anew, so a retry is never stale.
const ReplayWindow = 5 * time.Minute

// Sign returns the signature header value for body sent at t: HMAC-SHA256
// under secret over "<t>.<body>", t in Unix seconds. The timestamp is
// inside the MAC, so a captured delivery cannot be replayed later under a
// fresh time.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrBadSignature = errors.New("webhook: signature does not verify")
	ErrStale        = errors.New("webhook: signature timestamp outside the replay window")
)

// Verify checks a signature header against body, as a receiver does: a
// v1 MAC that matches (compared in constant time) and a timestamp within
// window of now, either way. A zero window means ReplayWindow.
func Verify(secret []byte, header string, body []byte, now time.Time, window time.Duration) error {
	if window <= 0 {
		window = ReplayWindow
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		ok = hmac.Equal(s, want) || ok
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return ErrStale
	}
	return nil
}
