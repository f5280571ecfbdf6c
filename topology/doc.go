// Package topology owns who is in the mesh and whether they are alive: every
// patchmesh node (hub, relays, edges, in any data centre) joins one or more
// gossip pools, each a cluster built on hashicorp/memberlist. It owns
// membership, the merge of a node's pools into one view, the health of
// each member (alive, dead, left), the small metadata each node
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
// States come from memberlist's public events only: NotifyJoin makes a
// member Alive, NotifyUpdate brings its new meta, NotifyLeave makes it
// Left if it announced its leave and Dead otherwise. Memberlist's own
// leave and a failure look alike to its EventDelegate (the state that
// tells them apart is unexported), so Leave first sends every live member
// a leave intent over memberlist's user channel, as Serf does. Memberlist
// does not report suspicion publicly, so there is no Suspect state: a
// member is Alive until memberlist declares it gone. Memberlist forgets
// dead members after GossipToTheDeadTime; this package keeps them
// (Config.Retain, a day by default) so operators see who went away and
// when. It joins them again now and then, as Serf does, and the join list
// wherever no live member is, so that a partition that outlasts
// memberlist's own gossip to the dead heals and a restarted hub is found.
// OnChange reports every change, from one goroutine of this package
// rather than memberlist's.
//
// # Pools
//
// A node gossips only with the members of its pools (Config.Pools; one
// pool, DefaultPool, without it). Pools bound what gossip costs: every
// member of a pool probes the others, pushes its whole member table to
// one of them every push-pull interval and broadcasts each change of its
// meta to all of them, so a pool's traffic grows with its size squared
// (docs/scale.md). A typical mesh runs one pool per region (its relays and
// edges) and a backbone pool (the hub and each region's top relay), which
// is then in two. Members returns the members of all pools merged by
// name: Alive if any pool that knows it says so, Dead or Left only when
// every such pool has given up on it, with the freshest meta; each Member
// names the pools that know it. Meta updates, leave intents and Leave go
// to every pool; keys are per pool (InstallKey and the others take pool
// names, every pool when none is given); Stats and the Collector count
// each pool apart as well as together.
//
// # Refusals
//
// Gossip this node refuses is a security event (auth.SecurityEvent),
// counted in Stats.Rejected and logged once per source and minute:
// packets and streams, received or answering a stream this node opened,
// that no installed key decrypts (EventKeyFail: the transport drops them
// before memberlist sees them), members
// whose meta does not decode, claims another name or gives a URL that is
// not http(s) (EventMetaFail, refused through memberlist's AliveDelegate
// and MergeDelegate) and two members with one name (EventNameFail, from
// its ConflictDelegate). Nothing is decided on memberlist's log text.
//
// # Encryption
//
// Gossip is never plaintext: Start refuses a Config without keys, and the
// transport seals everything memberlist sends and opens everything that
// arrives, in memberlist's own encrypted wire format (seal.go), so that it
// talks to nodes whose memberlist encrypts. Keys[0] is the primary key,
// which encrypts; every installed key decrypts.
// To rotate without splitting the cluster, follow memberlist's order: install
// the new key on every node of the pool (InstallKey), then make it primary
// everywhere (UseKey), then remove the old one everywhere (RemoveKey).
package topology
