-- ROI: the daily facts the roi_report asset derives from gpu_cost, and the report it stores.
-- The hourly rollup has no pod, so per-pod recommendations need the minute rows once per day;
-- every ROI report and `gpu-autoscaler optimize` then read these small daily tables.

-- One row per (day, pod, node), plus one per (day, node) for its idle GPUs (pod_uid 'idle:node').
CREATE TABLE roi_usage_daily (
    day                 date             NOT NULL,
    cluster             text             NOT NULL,
    pod_uid             text             NOT NULL,
    node                text             NOT NULL,
    namespace           text             NOT NULL,
    team                text             NOT NULL,
    gpu_model           text             NOT NULL,
    capacity_type       text             NOT NULL,
    provider            text             NOT NULL,
    sharing_mode        text             NOT NULL,
    is_idle             boolean          NOT NULL,
    gpu_share           double precision NOT NULL,  -- the largest share held in the day
    hours               double precision NOT NULL,  -- wall time: sum(seconds) / 3600
    gpu_hours           double precision NOT NULL,
    cost_usd            double precision NOT NULL,
    on_demand_cost_usd  double precision NOT NULL,
    exclusive_cost_usd  double precision NOT NULL,
    measured_gpu_hours  double precision NOT NULL,  -- GPU-hours with a measured utilization
    measured_cost_usd   double precision NOT NULL,  -- their cost
    used_gpu_hours      double precision NOT NULL,  -- sum(gpu_hours × utilization)
    unused_cost_usd     double precision NOT NULL,  -- measured: cost × (1 − utilization); idle: cost
    max_utilization     double precision,           -- null when never measured
    pod                 text             NOT NULL,  -- the pod's name ('' for idle GPUs)
    -- labelled interruptible (GPU_COST_INTERRUPTIBLE_LABEL) when the day was derived
    interruptible       boolean          NOT NULL,
    -- the pod ran in the day's first or last minute, or was seen before or after the day:
    -- it may have rows on other days, so period reports sum it across days; every other row
    -- is a whole pod on its own
    spans_days          boolean          NOT NULL
);
CREATE INDEX roi_usage_daily_day ON roi_usage_daily (cluster, day);
-- Cost with no team label: the pods to name are a small part of the table.
CREATE INDEX roi_usage_daily_unlabelled ON roi_usage_daily (cluster, day)
    WHERE team = '' AND NOT is_idle;

-- The day's usage facts summed per attribution and price key (node only for idle GPUs): what the
-- savings components and totals of any period read, a few hundred rows per day.
CREATE TABLE roi_summary_daily (
    day                 date             NOT NULL,
    cluster             text             NOT NULL,
    namespace           text             NOT NULL,
    team                text             NOT NULL,
    gpu_model           text             NOT NULL,
    capacity_type       text             NOT NULL,
    provider            text             NOT NULL,
    sharing_mode        text             NOT NULL,
    is_idle             boolean          NOT NULL,
    node                text             NOT NULL,  -- '' for pods
    pod_days            bigint           NOT NULL,  -- (pod, node) rows summed
    hours               double precision NOT NULL,
    gpu_hours           double precision NOT NULL,
    cost_usd            double precision NOT NULL,
    on_demand_cost_usd  double precision NOT NULL,
    exclusive_cost_usd  double precision NOT NULL,
    measured_gpu_hours  double precision NOT NULL,
    measured_cost_usd   double precision NOT NULL,
    used_gpu_hours      double precision NOT NULL,
    unused_cost_usd     double precision NOT NULL,
    unmeasured_cost_usd double precision NOT NULL   -- cost of pod rows never measured
);
CREATE INDEX roi_summary_daily_day ON roi_summary_daily (cluster, day);

-- One row per (day, GPU model, capacity type): how many GPUs ran, minute by minute.
CREATE TABLE roi_capacity_daily (
    day            date             NOT NULL,
    cluster        text             NOT NULL,
    gpu_model      text             NOT NULL,
    capacity_type  text             NOT NULL,
    peak_gpus      double precision NOT NULL,  -- most GPUs present in any minute
    min_gpus       double precision NOT NULL,  -- fewest in any covered minute (0 if absent in one)
    peak_nodes     bigint           NOT NULL,
    gpu_hours      double precision NOT NULL,  -- capacity run: pods' shares + idle GPUs
    minutes        bigint           NOT NULL,  -- covered minutes in which this key ran
    PRIMARY KEY (cluster, day, gpu_model, capacity_type)
);

-- The stored report of each day (exactly what `gpu-autoscaler cost --roi --format json` prints
-- for that day), with its headline figures as columns for SQL readers such as Grafana.
CREATE TABLE roi_reports (
    day                date             NOT NULL,
    cluster            text             NOT NULL,
    covered_minutes    integer          NOT NULL,  -- minutes of the day that have cost rows
    baseline_cost_usd  double precision NOT NULL,
    actual_cost_usd    double precision NOT NULL,
    total_savings_usd  double precision NOT NULL,
    savings_percent    double precision NOT NULL,
    report             jsonb            NOT NULL,
    computed_at        timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, day)
);
