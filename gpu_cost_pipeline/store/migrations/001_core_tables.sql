-- Minute tables of the cost data plane. Every table carries `cluster`, so several clusters can
-- share one database and a window rewrite only ever touches its own cluster's rows.

-- One row per GPU pod seen, its attribution and labels (minute rows refer to it by pod_uid).
CREATE TABLE gpu_pods (
    cluster         text        NOT NULL,
    pod_uid         text        NOT NULL,
    namespace       text        NOT NULL,
    pod             text        NOT NULL,
    team            text        NOT NULL DEFAULT '',
    project         text        NOT NULL DEFAULT '',
    experiment_id   text        NOT NULL DEFAULT '',
    cost_center     text        NOT NULL DEFAULT '',
    gpu_resource    text        NOT NULL,
    gpu_requested   integer     NOT NULL,
    sharing_mode    text        NOT NULL,
    labels          jsonb       NOT NULL DEFAULT '{}',
    cost_limit_usd  double precision,
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    PRIMARY KEY (cluster, pod_uid)
);

-- One row per GPU pod per minute it ran: what share of which node's GPUs, for how many seconds.
CREATE TABLE gpu_pod_usage (
    minute      timestamptz      NOT NULL,
    cluster     text             NOT NULL,
    pod_uid     text             NOT NULL,
    node        text             NOT NULL,
    gpu_share   double precision NOT NULL CHECK (gpu_share >= 0),
    seconds     smallint         NOT NULL CHECK (seconds BETWEEN 0 AND 60)
);
CREATE INDEX gpu_pod_usage_window ON gpu_pod_usage (cluster, minute);

-- One row per GPU node per minute: what it is (the price key) and how much of it pods held.
CREATE TABLE gpu_node_usage (
    minute          timestamptz      NOT NULL,
    cluster         text             NOT NULL,
    node            text             NOT NULL,
    gpu_model       text             NOT NULL,
    gpu_count       integer          NOT NULL CHECK (gpu_count > 0),
    sharing_mode    text             NOT NULL,
    capacity_type   text             NOT NULL,
    instance_type   text             NOT NULL DEFAULT '',
    provider        text             NOT NULL,
    region          text             NOT NULL DEFAULT '',
    zone            text             NOT NULL DEFAULT '',
    seconds         smallint         NOT NULL CHECK (seconds BETWEEN 0 AND 60),
    gpus_held       double precision NOT NULL,
    idle_gpus       double precision NOT NULL
);
CREATE INDEX gpu_node_usage_window ON gpu_node_usage (cluster, minute);

-- Every price the pipeline used, with where it came from and when it took effect, so history
-- can be re-priced by re-materializing cost partitions.
CREATE TABLE price_points (
    cluster                       text             NOT NULL,
    provider                      text             NOT NULL,
    region                        text             NOT NULL DEFAULT '',
    zone                          text             NOT NULL DEFAULT '',
    instance_type                 text             NOT NULL DEFAULT '',
    gpu_model                     text             NOT NULL,
    capacity_type                 text             NOT NULL,
    price_per_gpu_hour            double precision NOT NULL CHECK (price_per_gpu_hour >= 0),
    on_demand_price_per_gpu_hour  double precision NOT NULL CHECK (on_demand_price_per_gpu_hour >= 0),
    source                        text             NOT NULL
        CHECK (source IN ('api', 'cache', 'estimate', 'override')),
    effective_at                  timestamptz      NOT NULL,
    fetched_at                    timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX price_points_window ON price_points (cluster, effective_at);

-- One row per pod per minute (and one idle row per node-minute with unheld GPUs).
CREATE TABLE gpu_cost (
    minute                        timestamptz      NOT NULL,
    cluster                       text             NOT NULL,
    pod_uid                       text             NOT NULL,
    node                          text             NOT NULL,
    namespace                     text             NOT NULL DEFAULT '',
    team                          text             NOT NULL DEFAULT '',
    project                       text             NOT NULL DEFAULT '',
    experiment_id                 text             NOT NULL DEFAULT '',
    cost_center                   text             NOT NULL DEFAULT '',
    gpu_model                     text             NOT NULL,
    capacity_type                 text             NOT NULL,
    instance_type                 text             NOT NULL DEFAULT '',
    provider                      text             NOT NULL,
    region                        text             NOT NULL DEFAULT '',
    sharing_mode                  text             NOT NULL,
    is_idle                       boolean          NOT NULL,
    gpu_share                     double precision NOT NULL,
    seconds                       smallint         NOT NULL,
    price_per_gpu_hour            double precision NOT NULL,
    on_demand_price_per_gpu_hour  double precision NOT NULL,
    cost_usd                      double precision NOT NULL,
    on_demand_cost_usd            double precision NOT NULL,
    exclusive_cost_usd            double precision NOT NULL,
    price_source                  text             NOT NULL
);
CREATE INDEX gpu_cost_window ON gpu_cost (cluster, minute);
