package auth

// Security event codes of node-to-node authentication: the peer
// listener's mutual TLS and the signed join.
const (
	// A peer's certificate identity (its node key) was accepted for a
	// request, or refused: at the handshake (a removed key, not a node
	// certificate) or at the request (a key without a live admission).
	EventPeerSuccess = "authn_peer_success"
	EventPeerFail    = "authn_peer_fail"
	// A live connection of a peer whose admission was removed was cut.
	EventPeerClosed = "peer_conn_closed"
	// A join token was made; a join attempt succeeded or failed.
	EventJoinTokenCreated = "join_token_created"
	EventJoinSuccess      = "node_join_success"
	EventJoinFail         = "node_join_fail"
)
