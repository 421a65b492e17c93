-- Price books: the prices the cloud price APIs published, fetched on their own schedule and kept
-- as dated points, so any minute (live or backfilled) resolves to the price in effect then.
-- Books are shared by every cluster in the database: a list price does not depend on who asks.

-- One row per price series: what a price applies to. An empty zone, instance type or GPU model
-- matches any (an on-demand price holds in every zone; a GCP GPU price for every machine type).
CREATE TABLE price_book_series (
    series_id           bigserial   PRIMARY KEY,
    provider            text        NOT NULL,
    region              text        NOT NULL,
    zone                text        NOT NULL DEFAULT '',
    instance_type       text        NOT NULL DEFAULT '',
    gpu_model           text        NOT NULL DEFAULT '',
    capacity_type       text        NOT NULL,
    first_effective_at  timestamptz NOT NULL,
    last_confirmed_at   timestamptz NOT NULL,
    UNIQUE (provider, region, capacity_type, zone, instance_type, gpu_model)
);

-- One row per price a series had, from effective_at until the series' next point. confirmed_at
-- is the last fetch that saw it: a price not confirmed for longer than the TTL is 'cache'.
CREATE TABLE price_book_points (
    series_id                bigint           NOT NULL
        REFERENCES price_book_series ON DELETE CASCADE,
    effective_at             timestamptz      NOT NULL,
    price_per_gpu_hour       double precision NOT NULL
        CHECK (price_per_gpu_hour > 0 AND price_per_gpu_hour < 'Infinity'),
    price_per_instance_hour  double precision CHECK (price_per_instance_hour > 0),
    gpu_count                integer          CHECK (gpu_count > 0),
    feed                     text             NOT NULL,
    sku                      text             NOT NULL DEFAULT '',
    term                     text             NOT NULL DEFAULT '',
    confirmed_at             timestamptz      NOT NULL,
    fetch_id                 bigint           NOT NULL,
    PRIMARY KEY (series_id, effective_at)
);

-- One row per fetch, good or failed: what the price-book assets read, stored and rejected.
CREATE TABLE price_book_fetches (
    fetch_id       bigserial   PRIMARY KEY,
    provider       text        NOT NULL,
    feeds          text        NOT NULL DEFAULT '',
    regions        text        NOT NULL DEFAULT '',
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    status         text        NOT NULL CHECK (status IN ('ok', 'failed')),
    skus_read      integer     NOT NULL DEFAULT 0,
    prices_stored  integer     NOT NULL DEFAULT 0,
    spot_points    integer     NOT NULL DEFAULT 0,
    rejected       integer     NOT NULL DEFAULT 0,
    message        text        NOT NULL DEFAULT ''
);
CREATE INDEX price_book_fetches_latest ON price_book_fetches (provider, finished_at);
