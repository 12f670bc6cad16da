-- Failure isolation (DESIGN.md guarantee 10).
--
-- Busy rows are kept per calendar: the same external event in two selected
-- calendars (Google gives every copy of an invitation the same id) is two
-- rows, each following its own calendar's rules, so declining it in one or
-- deselecting one calendar never deletes the other copy's busy time.
-- Availability merges overlapping rows as before. A database upgraded from
-- the old key keeps its rows (each is unique under the new key too); run
-- `calsync replay --swap` once to split rows that two calendars shared.
ALTER TABLE busy_intervals DROP CONSTRAINT busy_intervals_pkey;
ALTER TABLE busy_intervals ADD PRIMARY KEY (connection_id, calendar_id, external_event_id);

-- Each selected calendar's own sync and channel health.
ALTER TABLE connection_calendars
    ADD COLUMN status           text        NOT NULL DEFAULT 'ok',
    ADD COLUMN failures         integer     NOT NULL DEFAULT 0,
    ADD COLUMN retry_at         timestamptz,
    ADD COLUMN last_error       text,
    ADD COLUMN last_error_at    timestamptz,
    ADD COLUMN channel_failures integer     NOT NULL DEFAULT 0,
    ADD COLUMN channel_retry_at timestamptz,
    ADD COLUMN channel_error    text;

-- When the connection's newest error happened (status says how long ago).
ALTER TABLE connections ADD COLUMN last_error_at timestamptz;

-- Each booking's own backoff, and the provider's status when a write
-- failed for good (state 'failed').
ALTER TABLE booking_events
    ADD COLUMN failures      integer NOT NULL DEFAULT 0,
    ADD COLUMN retry_at      timestamptz,
    ADD COLUMN failed_status integer;
DROP INDEX booking_events_pending;
CREATE INDEX booking_events_pending ON booking_events (state)
    WHERE state IN ('pending', 'waiting', 'failed');
