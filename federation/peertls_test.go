package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
)

// pinSet is a PeerPins over two fixed sets.
type pinSet struct{ live, removed map[string]bool }

func (p pinSet) Pinned(id string) bool  { return p.live[id] }
func (p pinSet) Refused(id string) bool { return p.removed[id] }

func nodeCert(t *testing.T) (tls.Certificate, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := federation.NodeCertificate(priv, "n", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c, federation.KeyID(priv.Public().(ed25519.PublicKey))
}

// handshake runs one TLS 1.3 handshake over loopback TCP and returns the
// client's and the server's errors; deadlines bound it.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(c, server)
		err = s.Handshake()
		if err == nil {
			// Answer one byte, so that the client sees the server's
			// verdict on its certificate, which TLS 1.3 gives after the
			// client's side of the handshake ends.
			_, err = s.Write([]byte{1})
		}
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	serverErr = <-done
	return clientErr, serverErr
}

func TestPeerTLSPinsBothSides(t *testing.T) {
	srv, srvID := nodeCert(t)
	cli, cliID := nodeCert(t)
	other, _ := nodeCert(t)
	refusedLog := func(string, error) {}
	both := pinSet{live: map[string]bool{srvID: true, cliID: true}}
	for _, tc := range []struct {
		name            string
		serverPins      pinSet
		clientPins      pinSet
		clientCert      tls.Certificate
		want            string
		clientOK, srvOK bool
	}{
		{"both admitted", both, both, cli, "", true, true},
		{"client pins the exact server key", both, pinSet{}, cli, srvID, true, true},
		{"server not admitted at the client", both, pinSet{live: map[string]bool{cliID: true}}, cli, "", false, false},
		{"server is another key than wanted", both, both, cli, cliID, false, false},
		{"client removed at the server", pinSet{live: map[string]bool{srvID: true}, removed: map[string]bool{cliID: true}}, both, cli, "", false, false},
		// Unknown keys get through the handshake (to reach the join);
		// the handler refuses them elsewhere.
		{"client unknown at the server", pinSet{}, both, other, "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := federation.PeerServerTLS(srv, tc.serverPins, refusedLog)
			c := federation.PeerClientTLS(tc.clientCert, tc.clientPins, tc.want)
			cerr, serr := handshake(t, s, c)
			if (cerr == nil) != tc.clientOK || (serr == nil) != tc.srvOK {
				t.Fatalf("client error %v (want ok=%v), server error %v (want ok=%v)", cerr, tc.clientOK, serr, tc.srvOK)
			}
		})
	}
}

// A certificate of one node with the private key of another cannot
// complete a handshake: the key is what is proved, not the certificate.
func TestPeerTLSRefusesAnothersCertificate(t *testing.T) {
	srv, srvID := nodeCert(t)
	victim, victimID := nodeCert(t)
	thief, _ := nodeCert(t)
	stolen := tls.Certificate{Certificate: victim.Certificate, PrivateKey: thief.PrivateKey}
	pins := pinSet{live: map[string]bool{srvID: true, victimID: true}}
	_, serr := handshake(t, federation.PeerServerTLS(srv, pins, func(string, error) {}), federation.PeerClientTLS(stolen, pins, ""))
	if serr == nil {
		t.Fatal("the server accepted a certificate presented without its private key")
	}
}

func TestPeerKeyRefusesNonNodeCertificates(t *testing.T) {
	if _, err := federation.PeerKey(nil); !errors.Is(err, federation.ErrPeerCert) {
		t.Fatalf("no certificate: got %v, want ErrPeerCert", err)
	}
	c, _ := nodeCert(t)
	if _, err := federation.PeerKey([]*x509.Certificate{c.Leaf, c.Leaf}); !errors.Is(err, federation.ErrPeerCert) {
		t.Fatalf("two certificates: got %v, want ErrPeerCert", err)
	}
}
