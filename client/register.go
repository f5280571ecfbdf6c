package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// RegisterRequest is what a machine registers with.
type RegisterRequest struct {
	// AuthToken is the operator's registration token (pma_…).
	AuthToken string
	// MachineID is the machine's raw ID, e.g. the contents of
	// /etc/machine-id. It is sent once and never stored by the client.
	MachineID string
	// Kernel and Arch are the machine's kernel release and architecture.
	Kernel, Arch string
}

// Registration is the outcome of Register.
type Registration struct {
	Tier    string
	Machine catalog.Machine
}

// Register registers the machine with the configured server and saves the
// machine token to the state directory. Nothing is saved when the server
// refuses.
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
	in := map[string]string{
		"machine_id":     r.MachineID,
		"kernel":         r.Kernel,
		"arch":           r.Arch,
		"client_version": c.cfg.ClientVersion,
	}
	var out struct {
		MachineToken string          `json:"machine_token"`
		Tier         string          `json:"tier"`
		Machine      catalog.Machine `json:"machine"`
	}
	if err := c.apiCall(ctx, c.cfg.Server, r.AuthToken, http.MethodPost, "/v1/client/register", nil, in, &out); err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	if !strings.HasPrefix(out.MachineToken, "pmm_") {
		return Registration{}, errors.New("register: the server's answer holds no machine token")
	}
	st := State{
		Server:       strings.TrimRight(c.cfg.Server, "/"),
		MachineToken: out.MachineToken,
		Tier:         out.Tier,
		MachineID:    out.Machine.ID,
		Registered:   time.Now().UTC(),
	}
	if err := saveState(c.cfg.StateDir, st); err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	return Registration{Tier: out.Tier, Machine: out.Machine}, nil
}

// session is a loaded registration and the server to talk to.
type session struct {
	server string
	token  string
}

// session loads the registration; Config.Server overrides the saved URL.
func (c *Client) session() (session, error) {
	st, err := LoadState(c.cfg.StateDir)
	if err != nil {
		return session{}, err
	}
	s := session{server: st.Server, token: st.MachineToken}
	if c.cfg.Server != "" {
		s.server = c.cfg.Server
	}
	return s, nil
}

// Status returns the server's record of this machine.
func (c *Client) Status(ctx context.Context) (catalog.Machine, error) {
	s, err := c.session()
	if err != nil {
		return catalog.Machine{}, fmt.Errorf("status: %w", err)
	}
	var m catalog.Machine
	if err := c.apiCall(ctx, s.server, s.token, http.MethodGet, "/v1/client/status", nil, nil, &m); err != nil {
		return catalog.Machine{}, fmt.Errorf("status: %w", err)
	}
	return m, nil
}
