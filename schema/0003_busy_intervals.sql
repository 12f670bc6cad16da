-- Busy time from external calendars, blocking the platform provider's
-- availability. One row per external event, unique on (platform provider,
-- calendar provider, external event id): the same event seen through two
-- calendars blocks once.
CREATE TABLE busy_intervals (
    platform_provider_id text        NOT NULL,
    provider             text        NOT NULL,
    external_event_id    text        NOT NULL,
    connection_id        uuid        NOT NULL,
    calendar_id          text        NOT NULL,
    starts_at            timestamptz NOT NULL,
    ends_at              timestamptz NOT NULL CHECK (ends_at > starts_at),
    -- The full-sync generation that last saw the event (mark and sweep).
    generation           bigint      NOT NULL,
    PRIMARY KEY (platform_provider_id, provider, external_event_id)
);

CREATE INDEX busy_intervals_by_provider_time ON busy_intervals (platform_provider_id, starts_at);
CREATE INDEX busy_intervals_by_calendar ON busy_intervals (connection_id, calendar_id, generation);

-- Sync position and health per selected calendar.
CREATE TABLE connection_calendars (
    connection_id         uuid        NOT NULL,
    calendar_id           text        NOT NULL,
    has_cursor            boolean     NOT NULL,
    generation            bigint      NOT NULL,
    full_sync_in_progress boolean     NOT NULL,
    last_success_at       timestamptz,
    PRIMARY KEY (connection_id, calendar_id)
);

ALTER TABLE connections
    ADD COLUMN error_count integer NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN backoff_until timestamptz,
    ADD COLUMN needs_reauthorization text,
    ADD COLUMN notifications_accepted bigint NOT NULL DEFAULT 0;
