package topology

import (
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// Memberlist keeps each member's health in its unexported nodeState, not in
// the exported Node.State, which stays StateAlive whatever happens
// (hashicorp/memberlist#266, fix proposed in #321). The *Node pointers it
// hands out (Members, LocalNode, the EventDelegate callbacks) point at the
// Node embedded first in a nodeState, so the state sits at a fixed offset
// after it. nodeStateLayout mirrors nodeState as of memberlist v0.7.0, and
// Start checks the mirror against this node's own entry before trusting it
// (see layoutLooksRight); if an upgrade moves the field, members are
// reported Alive and Dead only, with a warning, and the tests of Suspect and
// Left fail. The state is only read while memberlist holds its node lock,
// from its callbacks, as any other read would race with its writes.
type nodeStateLayout struct {
	memberlist.Node
	Incarnation uint32
	State       memberlist.NodeStateType
	StateChange time.Time
}

func nodeStateOf(n *memberlist.Node) *nodeStateLayout {
	return (*nodeStateLayout)(unsafe.Pointer(n))
}

// layoutLooksRight checks the mirror on this node's own entry as memberlist
// announces it (NotifyJoin, under memberlist's lock): just created, alive,
// first incarnation, state changed a moment ago.
func layoutLooksRight(self *memberlist.Node, started time.Time) bool {
	s := nodeStateOf(self)
	return s.State == memberlist.StateAlive && s.Incarnation >= 1 && s.Incarnation < 1<<16 &&
		!s.StateChange.Before(started) && time.Since(s.StateChange) < time.Minute
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return Alive
	case memberlist.StateSuspect:
		return Suspect
	case memberlist.StateLeft:
		return Left
	}
	return Dead
}
