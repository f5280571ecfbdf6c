package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ErrInsecureURL refuses a receiver URL that is not https where plain
// http is not allowed.
var ErrInsecureURL = errors.New("webhook: only https receiver URLs are allowed")

// CheckURL says whether raw may be a receiver: an absolute http(s) URL
// with a host and no user info (a password in a URL would be listed and
// logged), https unless allowHTTP.
func CheckURL(raw string, allowHTTP bool) error {
	if len(raw) > 2048 {
		return errors.New("webhook: URL longer than 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("webhook: URL does not parse")
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "", u.Opaque != "":
		return errors.New("webhook: URL must be absolute, https://host/path")
	case u.User != nil:
		return errors.New("webhook: URL must not carry user info; the signature authenticates the node")
	case u.Fragment != "":
		return errors.New("webhook: URL must not carry a fragment")
	case u.Scheme == "http" && !allowHTTP:
		return ErrInsecureURL
	}
	return nil
}

// errRedirect names a redirect the client refused to follow.
var errRedirect = errors.New("redirect not followed")

// sameHostRedirects follows a redirect only when it keeps the method and
// body (307, 308), only to the host (and port) of the first request and
// never from https to http: a receiver must not be able
// to send the node's signed events, or the node's requests, elsewhere.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	switch {
	case req.Response != nil && req.Response.StatusCode != http.StatusTemporaryRedirect &&
		req.Response.StatusCode != http.StatusPermanentRedirect:
		// 301, 302 and 303 turn the POST into a GET without the body.
		return fmt.Errorf("%w: status %d would drop the body", errRedirect, req.Response.StatusCode)
	case len(via) >= 5:
		return fmt.Errorf("%w: more than 5 redirects", errRedirect)
	case !strings.EqualFold(req.URL.Host, first.Host):
		return fmt.Errorf("%w: to another host (%s)", errRedirect, req.URL.Host)
	case first.Scheme == "https" && req.URL.Scheme != "https":
		return fmt.Errorf("%w: from https to http", errRedirect)
	}
	return nil
}
