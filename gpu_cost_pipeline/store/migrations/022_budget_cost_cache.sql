-- budget_status reads a month of grouped costs every minute. The closed hours of the month do
-- not change unless a window of them is rewritten, so their grouped sums are kept here, per
-- grouping (which scope values and label selectors the budgets name), and only the hours since
-- are read again. pod_hourly_changes says when each hour of the per-pod rollup was last
-- rewritten: a rewrite of a cached hour drops the cache.
CREATE TABLE pod_hourly_changes (
    cluster     text        NOT NULL,
    hour        timestamptz NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (cluster, hour)
);

CREATE TABLE grouped_cost_cache (
    cluster       text        NOT NULL,
    fingerprint   text        NOT NULL,
    through_hour  timestamptz NOT NULL,
    computed_at   timestamptz NOT NULL,
    frame         bytea       NOT NULL,   -- Arrow IPC stream of the grouped frame
    PRIMARY KEY (cluster, fingerprint)
);
