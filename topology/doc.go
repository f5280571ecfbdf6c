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
// Joins, deaths, leaves and metadata changes come from memberlist's event
// callbacks. Memberlist does not publish a member's health in Node.State
// (it stays alive; hashicorp/memberlist#266), so the state, Suspect
// included, is read from memberlist's own record of it (nodestate.go): in
// the callbacks, and by a poll every half probe interval and on every call
// to Members, since becoming suspect is not an event. Memberlist forgets
// dead members after GossipToTheDeadTime; this package keeps them
// (Config.Retain, a day by default) so operators see who went away and when.
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
