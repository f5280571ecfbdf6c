-- Revocation. A machine remembers the enrollment (auth) token it
-- registered with here, so that revoking the token can revoke the machines
-- it enrolled; a revoked machine keeps its row (and its tokens, revoked),
-- and may not register again here until an operator deletes it. An
-- enrollment token records whether its revocation took its machines with
-- it, as the hub's signed token.revoked record says to every node. Per
-- admin, the time before which every macaroon minted for them is refused
-- (logout everywhere).
ALTER TABLE machines ADD COLUMN enrolled_by TEXT;
ALTER TABLE machines ADD COLUMN revoked_us BIGINT;
CREATE INDEX machines_enrolled_by ON machines (enrolled_by);
ALTER TABLE tokens ADD COLUMN revoke_machines INTEGER NOT NULL DEFAULT 0;
CREATE TABLE admin_sessions_revoked (
    name          TEXT PRIMARY KEY,
    not_before_us BIGINT NOT NULL
);
