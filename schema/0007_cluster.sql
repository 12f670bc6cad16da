-- Several serve nodes on one PostgreSQL (docs/CLUSTER.md).
--
-- Connections hash into 1,024 slices (core::cluster::slice_of). Each slice
-- is leased to at most one node: the row's owner, an epoch from a sequence
-- (every claim takes a new one, so a lease that moved is never mistaken
-- for the old one) and an expiry in database time. A node claims free or
-- expired slices with one conditional UPDATE, renews what it holds every
-- second, and releases on shutdown. The event log's stream versions stay
-- the fence: a lease only keeps two nodes from doing the same work.

CREATE TABLE nodes (
    name       text        PRIMARY KEY,
    -- Where peers forward requests for this node's slices (http://host:port).
    address    text        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_beat  timestamptz NOT NULL DEFAULT now(),
    -- Set on SIGTERM: the node takes nothing more and hands its slices over.
    stopping   boolean     NOT NULL DEFAULT false,
    -- Counters the node reports with each heartbeat (cluster status).
    forwarded  bigint      NOT NULL DEFAULT 0,
    inboxed    bigint      NOT NULL DEFAULT 0
);

CREATE SEQUENCE lease_epochs;

CREATE TABLE leases (
    slice      integer     PRIMARY KEY CHECK (slice >= 0 AND slice < 1024),
    owner      text,
    epoch      bigint      NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '1970-01-01 00:00:00+00',
    claimed_at timestamptz
);
INSERT INTO leases (slice) SELECT generate_series(0, 1023);

-- Notifications accepted by a node that could not reach the connection's
-- owner: durable here (so the provider gets its 2xx only after a commit),
-- drained by the owner in id order. One row per (connection, key): a
-- repeat while it waits is answered `duplicate` by the accepting node.
CREATE TABLE inbox (
    id            bigserial   PRIMARY KEY,
    connection_id uuid        NOT NULL,
    slice         integer     NOT NULL,
    dedupe_key    text        NOT NULL,
    channel_id    text        NOT NULL,
    accepted_by   text        NOT NULL,
    accepted_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connection_id, dedupe_key)
);
CREATE INDEX inbox_by_slice ON inbox (slice, id);
