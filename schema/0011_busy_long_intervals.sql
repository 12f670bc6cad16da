-- Availability reads a provider's busy time in a window (BUSY_SPANS_SQL in
-- src/store/availability.rs) as two disjoint halves: intervals starting at
-- most a day before the window, a bounded range of the existing
-- (platform_provider_id, starts_at) index; and intervals longer than a day
-- that started earlier, found here by their end. Without this, the
-- overlap test "starts before the window's end and ends after its start"
-- walked the provider's whole history before the window.
CREATE INDEX busy_intervals_long_by_provider_end
    ON busy_intervals (platform_provider_id, ends_at)
    WHERE ends_at - starts_at > interval '1 day';
