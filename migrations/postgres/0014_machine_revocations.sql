-- Mesh-wide machine revocations. The hub signs a machine.revoked record
-- on every tier when an operator revokes a machine there, and a
-- machine.deleted record when one deletes it there, lifting the
-- revocation. Every node keeps the newest word per machine ID (an HMAC
-- under the mesh key, the same at every node): revoked_us is when the hub
-- revoked it, lifted_us when the hub deleted it after that (NULL while
-- the revocation stands). A registration, by enrollment token or by
-- credential, of an ID revoked here and not lifted is refused, whether
-- or not the machine ever registered at this node.
CREATE TABLE machine_revocations (
    id         TEXT PRIMARY KEY,
    revoked_us BIGINT NOT NULL,
    lifted_us  BIGINT
);
