-- Scoped API tokens and the admin audit trail.

-- Tokens are stored as the SHA-256 of the token (hex), never the token.
-- A name is unique among live tokens; a revoked token keeps its row (the
-- audit names it) and is refused on the next request of every node, which
-- reads this table per request.
CREATE TABLE api_tokens (
    token_id    uuid        PRIMARY KEY,
    name        text        NOT NULL,
    token_hash  text        NOT NULL UNIQUE,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- Every change made through /admin/* (not reads), with the token's name.
CREATE TABLE admin_audit (
    audit_id    bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    token_name  text        NOT NULL,
    method      text        NOT NULL,
    path        text        NOT NULL,
    status      integer     NOT NULL
);
