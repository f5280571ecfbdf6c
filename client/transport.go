package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"
)

// Transport holds how HTTP requests leave the machine.
type Transport struct {
	// CAFile is a PEM bundle of certificate authorities trusted in addition
	// to the system's, for nodes behind a private CA.
	CAFile string
	// Proxy is an http:// or https:// proxy URL for every request. Empty
	// means the environment's HTTPS_PROXY, HTTP_PROXY and NO_PROXY.
	Proxy string
	// RequireTLS refuses every plain http:// URL, for API calls, downloads
	// and redirects alike.
	RequireTLS bool
}

// NewHTTPClient builds an HTTP client that trusts the system roots plus
// t.CAFile, speaks TLS 1.2 or better, goes through t.Proxy and, with
// t.RequireTLS, refuses to follow a redirect to plain http.
func NewHTTPClient(t Transport) (*http.Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			// No system pool (a minimal container): trust the bundle alone.
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", t.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	proxy := http.ProxyFromEnvironment
	if t.Proxy != "" {
		pu, err := url.Parse(t.Proxy)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("proxy %q: must be an http:// or https:// URL", t.Proxy)
		}
		proxy = http.ProxyURL(pu)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.Proxy = proxy
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if t.RequireTLS && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), ErrInsecureURL)
			}
			return nil
		},
	}, nil
}
