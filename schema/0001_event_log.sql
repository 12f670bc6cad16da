-- The append-only event log: the single source of truth.
--
-- position      global, unique, assigned at insert time (not commit order);
-- txid          the writing transaction's id. Readers that follow the global
--               order use (txid, position) and only read below the oldest
--               transaction still running (pg_snapshot_xmin), so an event
--               committed later can never appear before one already read.
-- version       gap-free per stream, starting at 1; (stream, version) unique
--               is what makes optimistic concurrency and fencing work.
-- payload       json (not jsonb): stored and returned byte for byte.
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream          text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_stream_version_unique UNIQUE (stream, version)
);

CREATE INDEX events_global_order ON events (txid, position);

-- Events are immutable: refuse UPDATE and DELETE at the database itself, so
-- no code path (or operator typo) can rewrite history.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only (% on events refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

-- Snapshots are a cache of folded stream state: deleting them all changes
-- nothing but start-up speed.
CREATE TABLE snapshots (
    stream          text        PRIMARY KEY,
    version         bigint      NOT NULL,
    schema_version  integer     NOT NULL,
    state           json        NOT NULL,
    saved_at        timestamptz NOT NULL DEFAULT now()
);
