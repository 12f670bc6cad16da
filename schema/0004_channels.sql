-- Push channels (Google) and subscriptions (Graph): how the webhook edge
-- finds a notification's connection and checks its secret. Only a SHA-256
-- of each secret is kept; closed channels stay for a grace period.
CREATE TABLE channels (
    channel_id     text        PRIMARY KEY,
    provider       text        NOT NULL,
    connection_id  uuid        NOT NULL,
    calendar_id    text        NOT NULL,
    resource_id    text        NOT NULL,
    secret_sha256  text        NOT NULL,
    expires_at     timestamptz NOT NULL,
    closed_at      timestamptz
);

CREATE INDEX channels_by_resource ON channels (provider, resource_id);
CREATE INDEX channels_by_connection ON channels (connection_id);
