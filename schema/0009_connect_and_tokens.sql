-- Scoped API tokens, the admin audit trail, and the OAuth connect flow.

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

-- An authorize request in flight: the state is single use (used_at) and
-- expires; stored by its SHA-256 so a database reader cannot finish a
-- stranger's flow. The PKCE verifier never leaves this row.
CREATE TABLE oauth_states (
    state_hash           text        PRIMARY KEY,
    provider             text        NOT NULL,
    platform_provider_id text        NOT NULL,
    return_url           text        NOT NULL,
    code_verifier        text        NOT NULL,
    created_by           text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    used_at              timestamptz
);

-- The calendars a connected account offers (listed at connect time and on
-- GET /v1/connections/{id}/calendars), from which the platform picks.
CREATE TABLE connection_offered_calendars (
    connection_id uuid    NOT NULL,
    calendar_id   text    NOT NULL,
    name          text    NOT NULL,
    is_primary    boolean NOT NULL,
    can_write     boolean NOT NULL,
    PRIMARY KEY (connection_id, calendar_id)
);
