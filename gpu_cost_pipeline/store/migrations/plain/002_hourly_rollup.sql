-- Plain PostgreSQL: the hourly rollup is a table the pipeline rewrites for the hours a cost
-- window touches (TimescaleDB keeps the same shape as a continuous aggregate instead).
CREATE TABLE gpu_cost_hourly (
    hour                timestamptz      NOT NULL,
    cluster             text             NOT NULL,
    namespace           text             NOT NULL,
    team                text             NOT NULL,
    project             text             NOT NULL,
    experiment_id       text             NOT NULL,
    cost_center         text             NOT NULL,
    gpu_model           text             NOT NULL,
    capacity_type       text             NOT NULL,
    is_idle             boolean          NOT NULL,
    price_source        text             NOT NULL,
    gpu_hours           double precision NOT NULL,
    cost_usd            double precision NOT NULL,
    on_demand_cost_usd  double precision NOT NULL,
    exclusive_cost_usd  double precision NOT NULL,
    pod_minutes         bigint           NOT NULL
);
CREATE INDEX gpu_cost_hourly_window ON gpu_cost_hourly (cluster, hour);
