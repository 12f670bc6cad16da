-- Read model: each booking's external event per connection, so support can
-- answer "is booking X in the calendar, and if not, why?".
CREATE TABLE booking_events (
    booking_id        text        NOT NULL,
    connection_id     uuid        NOT NULL,
    calendar_id       text,
    external_event_id text,
    ical_uid          text        NOT NULL,
    etag              text,
    -- pending (a write is in flight or will be retried), waiting (cannot
    -- write now: re-authorisation, backoff, no destination), written,
    -- removed (cancelled and gone from the calendar)
    state             text        NOT NULL,
    booking_version   bigint      NOT NULL,
    written_version   bigint,
    last_error        text,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (booking_id, connection_id)
);

CREATE INDEX booking_events_pending ON booking_events (state) WHERE state IN ('pending', 'waiting');
