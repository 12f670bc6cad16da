-- Push subscriptions of the platform feed (docs/PLATFORM_EVENTS.md).
--
-- A subscription itself — URL, event types, every delivery attempt and its
-- outcome, dead-lettering, replays — lives in the log, in its own stream
-- `subscription-<uuid>`. Only the secret deliveries are signed with is
-- kept here, outside the log, and never shown again after creation.
CREATE TABLE feed_subscription_secrets (
    subscription_id uuid        PRIMARY KEY,
    secret          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
