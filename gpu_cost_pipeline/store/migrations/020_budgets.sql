-- Attribution, budgets, alerts and enforcement (the same tables on plain PostgreSQL and
-- TimescaleDB).

-- Cost per pod per hour: gpu_cost_hourly keeps no pod, and scopes that select pods by their
-- labels need one. Rewritten with gpu_cost for the hours each cost window touches; idle rows
-- keep their idle:<node> uid. Also what pod cost limits (the cost-limit annotation) sum over.
CREATE TABLE gpu_pod_cost_hourly (
    hour                timestamptz      NOT NULL,
    cluster             text             NOT NULL,
    pod_uid             text             NOT NULL,
    namespace           text             NOT NULL,
    team                text             NOT NULL,
    project             text             NOT NULL,
    experiment_id       text             NOT NULL,
    cost_center         text             NOT NULL,
    gpu_model           text             NOT NULL,
    capacity_type       text             NOT NULL,
    is_idle             boolean          NOT NULL,
    gpu_hours           double precision NOT NULL,
    cost_usd            double precision NOT NULL,
    on_demand_cost_usd  double precision NOT NULL,
    exclusive_cost_usd  double precision NOT NULL,
    pod_minutes         bigint           NOT NULL
);
CREATE INDEX gpu_pod_cost_hourly_window ON gpu_pod_cost_hourly (cluster, hour);
CREATE INDEX gpu_pod_cost_hourly_pod ON gpu_pod_cost_hourly (cluster, pod_uid);

INSERT INTO gpu_pod_cost_hourly
SELECT date_trunc('hour', minute), cluster, pod_uid, namespace, team, project, experiment_id,
       cost_center, gpu_model, capacity_type, is_idle, sum(gpu_share * seconds) / 3600.0,
       sum(cost_usd), sum(on_demand_cost_usd), sum(exclusive_cost_usd), count(*)
FROM gpu_cost
GROUP BY 1, cluster, pod_uid, namespace, team, project, experiment_id, cost_center, gpu_model,
         capacity_type, is_idle;

-- The latest status of each spec (what `gpu-autoscaler budgets|attributions` and the UI show,
-- and what the sensors read). `problem` is set when the spec is invalid.
CREATE TABLE cost_budget_status (
    cluster            text             NOT NULL,
    namespace          text             NOT NULL,
    name               text             NOT NULL,
    source             text             NOT NULL,
    period             text             NOT NULL DEFAULT '',
    monthly_limit      double precision,
    current_spend      double precision,
    exceeded_since     timestamptz,
    status             jsonb            NOT NULL DEFAULT '{}',
    problem            text,
    computed_at        timestamptz      NOT NULL,
    PRIMARY KEY (cluster, namespace, name)
);

CREATE TABLE cost_attribution_status (
    cluster      text        NOT NULL,
    namespace    text        NOT NULL,
    name         text        NOT NULL,
    source       text        NOT NULL,
    status       jsonb       NOT NULL DEFAULT '{}',
    problem      text,
    computed_at  timestamptz NOT NULL,
    PRIMARY KEY (cluster, namespace, name)
);

-- Every delivery attempt of every alert, per channel: the source of truth for "once". A
-- (subject, alert, period, action, channel) has at most one 'sent' row, whatever runs.
CREATE TABLE alert_ledger (
    id              bigserial   PRIMARY KEY,
    cluster         text        NOT NULL,
    subject_kind    text        NOT NULL CHECK (subject_kind IN ('budget', 'pod')),
    namespace       text        NOT NULL,
    name            text        NOT NULL,   -- budget name, or pod uid
    alert           text        NOT NULL,
    period          text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('trigger', 'resolve')),
    channel_index   integer     NOT NULL,
    channel_type    text        NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('sent', 'failed', 'rejected')),
    attempts        integer     NOT NULL,
    detail          text        NOT NULL DEFAULT '',
    run_id          text        NOT NULL DEFAULT '',
    attempted_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alert_ledger_sent_once ON alert_ledger
    (cluster, subject_kind, namespace, name, alert, period, action, channel_index)
    WHERE outcome = 'sent';
CREATE INDEX alert_ledger_subject ON alert_ledger (cluster, subject_kind, namespace, name);

-- Block and throttle actions: one row per application, closed when lifted; `details` keeps
-- what was created or changed (and the values a throttle replaced, for an exact restore).
CREATE TABLE budget_enforcements (
    id          bigserial   PRIMARY KEY,
    cluster     text        NOT NULL,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('block', 'throttle')),
    period      text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    lifted_at   timestamptz,
    lift_reason text,
    details     jsonb       NOT NULL DEFAULT '{}',
    run_id      text        NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX budget_enforcements_active ON budget_enforcements (cluster, namespace, name)
    WHERE lifted_at IS NULL;

-- Pods whose accumulated cost passed their gpu-autoscaler.io/cost-limit annotation.
CREATE TABLE pod_cost_limit_breaches (
    cluster          text             NOT NULL,
    pod_uid          text             NOT NULL,
    namespace        text             NOT NULL,
    pod              text             NOT NULL,
    cost_limit_usd   double precision NOT NULL,
    cost_usd         double precision NOT NULL,
    detected_at      timestamptz      NOT NULL DEFAULT now(),
    event_recorded   boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (cluster, pod_uid)
);
