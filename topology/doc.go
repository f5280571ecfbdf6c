// Package topology owns who is in the mesh and whether they are alive: every
// patchmesh node (hub, relays, edges, in any data centre) joins one gossip
// cluster built on hashicorp/memberlist. It owns membership, the health of
// each member (alive, suspect, dead, left), the small metadata each node
// advertises about itself (Meta: role, data centre, API URL, upstream, sync
// progress, tiers) and the encryption of the gossip itself (the keyring and
// its rotation at run time).
//
// It does not own synchronisation (federation decides which upstream to pull
// from, and may use Members to choose), serving anything over HTTP (api), or
// reading keys from files and the environment (node does that with
// ParseKeys).
//
// # Health
//
// Memberlist does not publish a member's health in Node.State, which stays
// alive whatever happens (hashicorp/memberlist#266), and becoming suspect or
// being cleared of it is not an event. So the states are read from
// memberlist's own records (nodestate.go), only inside its callbacks, while
// it holds its lock: every join, update, death or alive message brings all
// members up to date. In between, a member this node's own probe found
// silent is marked Suspect at once (memberlist logs it), and one that
// answers a probe again is marked Alive. Memberlist forgets dead members
// after GossipToTheDeadTime; this package keeps them (Config.Retain, a day
// by default) so operators see who went away and when.
//
// A node that calls Leave is seen Left; one that stops without it (Close, a
// crash, a partition) is seen Suspect, then Dead. OnChange reports every
// change, from one goroutine of this package rather than memberlist's.
//
// # Encryption
//
// Gossip is never plaintext: Start refuses a Config without keys, and
// memberlist is told to verify that every incoming message is encrypted.
// Keys[0] is the primary key, which encrypts; every installed key decrypts.
// To rotate without splitting the cluster, follow memberlist's order: install
// the new key on every node (InstallKey), then make it primary everywhere
// (UseKey), then remove the old one everywhere (RemoveKey).
package topology
