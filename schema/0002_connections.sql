-- Read model: one row per connection, folded from its stream and written in
-- the same transaction as the events that changed it.
CREATE TABLE connections (
    connection_id        uuid        PRIMARY KEY,
    platform_provider_id text        NOT NULL,
    provider             text        NOT NULL,
    account              text        NOT NULL,
    calendars            json        NOT NULL,
    destination_calendar text,
    status               text        NOT NULL,
    pause_reason         text,
    quarantine_reason    text,
    quarantined_at       timestamptz,
    stream_version       bigint      NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX connections_by_platform_provider ON connections (platform_provider_id);
CREATE INDEX connections_by_status ON connections (status);

-- Secrets never enter the log. OAuth tokens live here, sealed with
-- AES-256-GCM under a key from configuration; the log records only that
-- they changed.
CREATE TABLE credentials (
    connection_id uuid        PRIMARY KEY,
    key_id        text        NOT NULL,
    nonce         bytea       NOT NULL,
    sealed        bytea       NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
