-- Explanations (issue 23): why a slot is busy, and why an event is not.
--
-- Each busy row names the busy rule that made its event block time
-- (`opaque`, `tentative_default`, `oof`, `all_day_in_zone(Europe/Berlin)` …;
-- NULL for events logged before explanations were recorded).
ALTER TABLE busy_intervals ADD COLUMN rule text;

-- Events the busy rules saw and ignored, with the reason (`transparent`,
-- `declined`, `working_location`, `own_booking`, `outside_window`,
-- `cancelled` …). A projection like busy_intervals: folded from the same
-- events, swept with the same generations, rebuilt and verified by replay.
CREATE TABLE ignored_events (
    connection_id        uuid        NOT NULL,
    calendar_id          text        NOT NULL,
    external_event_id    text        NOT NULL,
    platform_provider_id text        NOT NULL,
    reason               text        NOT NULL,
    -- The event's times when they could be read (a tombstone has none).
    starts_at            timestamptz,
    ends_at              timestamptz,
    -- calsync's own booking, for `own_booking`.
    booking_id           text,
    generation           bigint      NOT NULL,
    PRIMARY KEY (connection_id, calendar_id, external_event_id)
);

CREATE INDEX ignored_events_by_provider_time ON ignored_events (platform_provider_id, starts_at);
