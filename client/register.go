package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// RegisterRequest is what a machine registers with.
type RegisterRequest struct {
	// AuthToken is the operator's enrollment token for the tier (pma_…).
	// It goes to the first contact only and is not kept (see State).
	AuthToken string
	// MachineID is the machine's raw ID, e.g. the contents of
	// /etc/machine-id. It is sent to the first contact only;
	// the client keeps only its hash.
	MachineID string
	// Kernel and Arch are the machine's kernel release and architecture.
	Kernel, Arch string
	// HubKeys are the hub public keys to pin ("ed25519:…", as `patchmesh
	// admin hub-key` prints them). Required: the machine verifies every
	// offer, and its tier, against them.
	HubKeys []string
	// HubTier is the machine's hub tier, given by the operator. Needed only
	// when the enrollment token was made on a relay or edge rather than at
	// the hub, so that no hub-signed record of it exists; otherwise the
	// tier is read from that record and, if HubTier is set too, must equal
	// it.
	HubTier string
}

// Registration is the outcome of Register.
type Registration struct {
	Tier    string
	Machine catalog.Machine
	// Nodes is the ranking learned from the first contact, nearest first.
	Nodes []Node
}

// Register registers the machine with the configured server (the first
// contact), saves the machine token and the enrollment token to the state
// directory, then learns from that node the nodes serving the tier and
// ranks them. Nothing is saved when the server refuses; a node list that
// cannot be learned leaves the first contact as the only node, to be
// learned again on a later call.
func (c *Client) Register(ctx context.Context, r RegisterRequest) (Registration, error) {
	if c.cfg.Server == "" {
		return Registration{}, errors.New("register: no server URL given")
	}
	if !strings.HasPrefix(r.AuthToken, "pma_") {
		return Registration{}, errors.New("register: the auth token must start with pma_")
	}
	for _, err := range []error{catalog.ValidMachineID(r.MachineID), catalog.ValidKernel(r.Kernel), catalog.ValidArch(r.Arch)} {
		if err != nil {
			return Registration{}, fmt.Errorf("register: %w", err)
		}
	}
	pins, err := NewPins(r.HubKeys)
	if err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	if r.HubTier != "" {
		if err := catalog.ValidName("hub tier", r.HubTier); err != nil {
			return Registration{}, fmt.Errorf("register: %w", err)
		}
	}
	// The enrollment token and the raw machine ID go to an admitted node
	// only, the first contact included.
	contactKey, err := c.checkFirstContact(ctx, pins, r.HubTier)
	if err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	got, err := c.registerAt(ctx, c.cfg.Server, r.AuthToken, r)
	if err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	// Nothing is saved unless the tier verifies: a node must not be able
	// to put the machine on a tier of its choosing.
	hubTier, err := enrolledTier(pins, r, got.enrollment)
	if err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	st := State{
		HubKeys:         pins.Keys(),
		HubTier:         hubTier,
		Server:          c.cfg.Server,
		Tier:            got.tier,
		MachineID:       got.reg.MachineID,
		Registered:      got.reg.Registered,
		Kernel:          r.Kernel,
		Arch:            r.Arch,
		MachineIDSHA256: machineIDHash(r.MachineID),
		Registrations:   map[string]NodeRegistration{c.cfg.Server: got.reg},
		Nodes:           []Node{{URL: c.cfg.Server}},
	}
	// Only a credential the first contact signed with the key it proved,
	// for this machine and tier, is kept (usableCredential).
	if _, err := usableCredential(got.credential, contactKey, got.reg.MachineID, got.tier, time.Now()); err == nil {
		st.Credential = got.credential
	}
	// Saved before the node list is asked for, so that the registration
	// survives whatever happens next.
	if err := saveState(c.cfg.StateDir, st); err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	s := &session{c: c, st: st, kernel: r.Kernel, arch: r.Arch, down: map[string]bool{}}
	if err := s.rerank(ctx); err != nil {
		return Registration{}, fmt.Errorf("register: registered, but ranking the nodes failed: %w", err)
	}
	return Registration{Tier: got.tier, Machine: got.machine, Nodes: s.st.Nodes}, nil
}

// ErrNodeNotAdmitted means the first contact could not show that the hub
// admitted it: no admission for its URL in its roster verifies against
// the pinned hub keys, or its hello does not prove it holds the admitted
// key. Nothing was sent to it.
var ErrNodeNotAdmitted = errors.New("the node is not one the hub admitted")

// checkFirstContact checks, before the machine sends the first contact
// anything secret, that the hub admitted a node at that URL (its roster,
// hub-signed, so it may come from the node itself) and that the node
// answering holds the admitted key (its hello). Without a hub tier to go
// by yet, an admission on any tier will do: it is the operator who chose
// this node, and the admission proves it is the one the hub knows at that
// address. The nodes learned from it are held to the machine's hub tier.
// It returns the admitted key the node proved it holds.
func (c *Client) checkFirstContact(ctx context.Context, pins *Pins, hubTier string) (ed25519.PublicKey, error) {
	server := c.cfg.Server
	var roster federation.RosterResponse
	if err := c.apiCall(ctx, server, "", http.MethodGet, "/v1/client/roster", nil, nil, &roster); err != nil {
		return nil, fmt.Errorf("read the node's roster: %w", err)
	}
	pins.Endorse(roster.Endorsements)
	var keys []ed25519.PublicKey
	for _, n := range roster.Nodes {
		for _, u := range n.URLs {
			if strings.TrimRight(u, "/") != server {
				continue
			}
			n.URL = u
			pub, rec, err := n.Verify(pins.v)
			if err == nil && (hubTier == "" || rec.Tier == hubTier) {
				keys = append(keys, pub)
			}
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no admission of a node at %s verifies against the pinned hub keys; "+
			"admit it at the hub (patchmesh node-key prints its key; patchmesh admin nodes admit NAME --key … --url %s), "+
			"or register at a node the hub admitted", ErrNodeNotAdmitted, server, server)
	}
	var errs []error
	for _, pub := range keys {
		err := c.hello(ctx, server, pub)
		if err == nil {
			return pub, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: the node at %s does not prove it holds the admitted key: %w", ErrNodeNotAdmitted, server, errors.Join(errs...))
}

// enrolledTier is the machine's hub tier: the Tier of the hub-signed
// record of the enrollment token, which must match the operator's HubTier
// if both are there, or the operator's HubTier when the node holds no
// such record.
func enrolledTier(pins *Pins, r RegisterRequest, enr federation.Enrollment) (string, error) {
	pins.Endorse(enr.Endorsements)
	if enr.TokenRecord == nil {
		if r.HubTier != "" {
			return r.HubTier, nil
		}
		return "", fmt.Errorf("%w: the node holds no hub-signed record of this enrollment token "+
			"(a token made on a relay or edge rather than at the hub); give --hub-tier NAME to pin the tier yourself", ErrEnrollmentUnverified)
	}
	tier, err := verifyEnrollment(pins, r.AuthToken, *enr.TokenRecord)
	if err != nil {
		return "", err
	}
	if r.HubTier != "" && r.HubTier != tier {
		return "", fmt.Errorf("%w: the hub made this token for tier %q, not %q", ErrEnrollmentUnverified, tier, r.HubTier)
	}
	return tier, nil
}

// Status returns the nearest answering node's record of this machine.
// Each node keeps its own record, written by the check-ins it received.
func (c *Client) Status(ctx context.Context) (catalog.Machine, error) {
	s, err := c.open(ctx, "", "", false)
	if err != nil {
		return catalog.Machine{}, fmt.Errorf("status: %w", err)
	}
	var m catalog.Machine
	err = s.do(ctx, func(ctx context.Context, t target) error {
		return c.apiCall(ctx, t.url, t.token, http.MethodGet, "/v1/client/status", nil, nil, &m)
	})
	if err != nil {
		return catalog.Machine{}, fmt.Errorf("status: %w", err)
	}
	return m, nil
}
