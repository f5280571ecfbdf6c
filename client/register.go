package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
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
	got, err := c.registerAt(ctx, c.cfg.Server, r.AuthToken, r)
	if err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	st := State{
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
