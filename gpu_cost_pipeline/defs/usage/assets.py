"""gpu_node_usage and gpu_pod_usage: what ran where, minute by minute."""

from datetime import datetime

import dagster as dg

from gpu_cost_pipeline.core.window_usage import derive_observed_usage, pod_attributes
from gpu_cost_pipeline.core.windows import window_chunks
from gpu_cost_pipeline.defs.partitions import minute_backfill_policy, minute_partitions
from gpu_cost_pipeline.defs.reporting import UsageTotals, add_partition_metadata, log_issues
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.settings import PARTITION_FORMAT
from gpu_cost_pipeline.store import queries
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.queries import StoredUsage


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "gpu_node_usage",
            description="One row per GPU node per minute: model, count, capacity type, price "
            "key, and how many of its GPUs pods held.",
            group_name="usage",
            kinds={"postgres"},
        ),
        dg.AssetSpec(
            "gpu_pod_usage",
            description="One row per GPU pod per minute: its share of physical GPUs and seconds "
            "run; attribution and labels in gpu_pods.",
            group_name="usage",
            kinds={"postgres"},
        ),
    ],
    partitions_def=minute_partitions,
    backfill_policy=minute_backfill_policy,
)
def gpu_usage(context: dg.AssetExecutionContext, store: CostStore, usage_source: UsageSource):
    """Observe the cluster over the window and store node and pod minutes (one transaction)."""
    window = context.partition_time_window
    totals = write_usage(store, usage_source, window.start, window.end)
    log_issues(context.log, totals.issues)
    keys = context.partition_keys
    add_partition_metadata(
        context, "gpu_node_usage", totals.node_partitions(keys, PARTITION_FORMAT)
    )
    add_partition_metadata(context, "gpu_pod_usage", totals.pod_partitions(keys, PARTITION_FORMAT))
    problems = totals.problem_counts()
    yield dg.MaterializeResult(asset_key="gpu_node_usage", metadata=problems["gpu_node_usage"])
    yield dg.MaterializeResult(asset_key="gpu_pod_usage", metadata=problems["gpu_pod_usage"])


def write_usage(
    store: CostStore,
    usage_source: UsageSource,
    window_start: datetime,
    window_end: datetime,
    keep_for_costing: StoredUsage | None = None,
) -> UsageTotals:
    """Observe the cluster over [window_start, window_end) and replace the window's node and pod
    minutes, in one transaction. With ``keep_for_costing``, each chunk's stored minutes are also
    kept there for ``write_costs`` in the same run, which then need not read them back."""
    settings = usage_source.settings()
    totals = UsageTotals()
    with store.write_window(settings.cluster, window_start, window_end) as writer:
        for start, end in window_chunks(window_start, window_end, usage_source.chunk_minutes):
            usage = derive_observed_usage(usage_source.observe(start, end), start, end, settings)
            writer.replace("gpu_node_usage", usage.nodes)
            writer.replace("gpu_pod_usage", usage.pods)
            writer.upsert_pods(pod_attributes(usage.pods))
            totals.add(usage)
            if keep_for_costing is not None:
                keep_for_costing[start] = (usage.nodes, usage.pods[queries.POD_MINUTE_COLUMNS])
    return totals
