-- The OAuth connect flow: issued states and the calendars each connected
-- account offers.

-- A state is stored by its SHA-256 (hex), never the state itself; it is
-- single use (used_at is set by the callback that consumes it, under
-- SELECT ... FOR UPDATE) and expires.
CREATE TABLE oauth_states (
    state_hash           text        PRIMARY KEY,
    provider             text        NOT NULL,
    platform_provider_id text        NOT NULL,
    return_url           text        NOT NULL,
    -- The account the platform expects (login_hint); another one is refused.
    expected_account     text,
    pkce_verifier        text        NOT NULL,
    created_by           text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    used_at              timestamptz
);

-- What the account offered when it was connected (calendarList / me/calendars).
CREATE TABLE connection_offered_calendars (
    connection_id uuid    NOT NULL,
    calendar_id   text    NOT NULL,
    name          text    NOT NULL,
    is_primary    boolean NOT NULL,
    can_write     boolean NOT NULL,
    PRIMARY KEY (connection_id, calendar_id)
);
