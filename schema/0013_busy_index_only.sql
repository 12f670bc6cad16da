-- Availability reads only (starts_at, ends_at) of a provider's busy
-- intervals (BUSY_SPANS_SQL in src/store/availability.rs). With the other
-- bound in the index, both halves of that read are index-only scans on
-- pages the visibility map marks all-visible (autovacuum keeps most of a
-- table so), instead of one heap fetch per row: the heap fetches were most
-- of the query's server time (BENCHMARKS.md, "availability").
CREATE INDEX busy_intervals_by_provider_time_covering
    ON busy_intervals (platform_provider_id, starts_at) INCLUDE (ends_at);
DROP INDEX busy_intervals_by_provider_time;
CREATE INDEX busy_intervals_long_by_provider_end_covering
    ON busy_intervals (platform_provider_id, ends_at) INCLUDE (starts_at)
    WHERE ends_at - starts_at > interval '1 day';
DROP INDEX busy_intervals_long_by_provider_end;
