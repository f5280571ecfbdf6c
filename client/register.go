package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// RegisterRequest is what a machine registers with.
type RegisterRequest struct {
	// AuthToken is the operator's enrollment token for the tier (pma_…).
	// It is kept in the state so that the machine can register at other
	// nodes of the tier (see State).
	AuthToken string
	// MachineID is the machine's raw ID, e.g. the contents of
	// /etc/machine-id. It is sent to each node the machine registers at;
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
		EnrollmentToken: r.AuthToken,
		Registrations:   map[string]NodeRegistration{c.cfg.Server: got.reg},
		Nodes:           []Node{{URL: c.cfg.Server}},
	}
	// Saved before the node list is asked for, so that the registration
	// survives whatever happens next.
	if err := saveState(c.cfg.StateDir, st); err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	// The raw ID is at hand now even if Config.MachineID is not set.
	s := &session{c: c.withMachineID(r.MachineID), st: st, kernel: r.Kernel, arch: r.Arch, down: map[string]bool{}}
	if err := s.rerank(ctx); err != nil {
		return Registration{}, fmt.Errorf("register: registered, but ranking the nodes failed: %w", err)
	}
	return Registration{Tier: got.tier, Machine: got.machine, Nodes: s.st.Nodes}, nil
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

// withMachineID is c using id to register at further nodes.
func (c *Client) withMachineID(id string) *Client {
	cc := *c
	cc.cfg.MachineID = id
	return &cc
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
