"""The price-book assets (one per provider), their coverage check and their schedules.

Each asset fetches its provider's prices for the regions and instance types the cluster's GPU
nodes use (plus the configured provider's region), validates them and stores them as dated
points in one transaction. A fetch that fails fails its run with a clear message and stores
nothing: gpu_prices goes on with the last good book (``cache``) or estimates.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES
from gpu_cost_pipeline.core.price_book import BookFetch
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.aws import AwsPrices
from gpu_cost_pipeline.integrations.azure import AzurePrices
from gpu_cost_pipeline.integrations.gcp import GcpPrices
from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store import price_book
from gpu_cost_pipeline.store.cost_store import CostStore

PROVIDERS = ("aws", "gcp", "azure")
NODES_SEEN_FOR = timedelta(days=7)  # instance types seen this recently are fetched
SPOT_FIRST_FETCH = timedelta(days=1)  # spot history read on a region's first fetch
SPOT_HISTORY_LIMIT = timedelta(days=90)  # what EC2 keeps
SPOT_OVERLAP = timedelta(minutes=10)
REJECTIONS_LOGGED = 50
COVERAGE_CHECK = "covers_gpu_nodes"

Fetch = Callable[[dict[str, set[str]], datetime, Callable[[str], None]], BookFetch]


def book_targets(
    store: CostStore, usage_source: UsageSource, provider: str, now: datetime
) -> dict[str, set[str]]:
    """region -> instance types to fetch: regions where the cluster's GPU nodes of this provider
    ran in the last week, plus the configured region when this is the configured provider; in
    each, the catalog's instance types of the provider and any other type seen there."""
    with store.connection() as conn:
        seen = price_book.instance_types_in_use(
            conn, usage_source.cluster, now - NODES_SEEN_FOR
        ).get(provider, {})
    regions = {region for region in seen if region}
    if provider == usage_source.default_provider and usage_source.default_region:
        regions.add(usage_source.default_region)
    catalog = {i.name for i in INSTANCE_TYPES.values() if i.provider == provider}
    return {region: catalog | seen.get(region, set()) for region in sorted(regions)}


def build_book(
    context: dg.AssetExecutionContext,
    provider: str,
    store: CostStore,
    usage_source: UsageSource,
    fetch: Fetch,
) -> dg.MaterializeResult:
    started = datetime.now(UTC)
    targets = book_targets(store, usage_source, provider, started)
    if not targets:
        context.log.info(f"no {provider} GPU nodes seen and {provider} is not configured")
        return dg.MaterializeResult(
            metadata={"regions": 0, "skus_read": 0, "gpu_prices_stored": 0},
            check_results=[dg.AssetCheckResult(check_name=COVERAGE_CHECK, passed=True)],
        )
    try:
        fetched = fetch(targets, started, context.log.info)
    except Exception as error:  # the run fails visibly; the book stays as it was
        message = f"{provider} price book fetch failed: {error}"
        with store.connection() as conn:
            price_book.record_failed_fetch(conn, provider, started, message)
        raise dg.Failure(
            description=f"{message}. Minute prices keep using the last good book (as 'cache') "
            "or estimates until a fetch succeeds."
        ) from None
    for rejection in fetched.rejections[:REJECTIONS_LOGGED]:
        context.log.warning(str(rejection))
    if len(fetched.rejections) > REJECTIONS_LOGGED:
        context.log.warning(f"… and {len(fetched.rejections) - REJECTIONS_LOGGED} more rejected")
    with store.connection() as conn:
        fetch_id = price_book.write_fetch(conn, fetched, started, datetime.now(UTC))
        pruned = price_book.delete_points_older_than(conn, provider, store.retention_days)
        uncovered = price_book.uncovered_keys(
            conn, usage_source.cluster, provider, started - timedelta(days=1)
        )
    points = fetched.points
    return dg.MaterializeResult(
        metadata={
            "fetch_id": fetch_id,
            "regions": len(targets),
            "feeds": ", ".join(fetched.feeds),
            "skus_read": fetched.skus_read,
            "gpu_prices_stored": len(points),
            "spot_series_points": fetched.spot_points,
            "rejected_items": len(fetched.rejections),
            "instance_types": int(points["instance_type"].nunique()) if len(points) else 0,
            "old_points_pruned": pruned,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=COVERAGE_CHECK,
                passed=uncovered.empty,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "uncovered_keys": len(uncovered),
                    "examples": ", ".join(
                        "/".join(map(str, row)) for row in uncovered.head(5).to_numpy()
                    ),
                },
            )
        ],
    )


def _book_asset(provider: str, title: str, resource: str):
    @dg.asset(
        name=f"{provider}_price_book",
        group_name="price_books",
        kinds={provider, "postgres"},
        check_specs=[
            dg.AssetCheckSpec(
                COVERAGE_CHECK,
                asset=f"{provider}_price_book",
                description="Every price key of the last day's GPU nodes of this provider "
                "has a series in the book (else those keys are priced by estimate).",
            )
        ],
        required_resource_keys={"store", "usage_source", resource},
        description=f"{title} prices for the cluster's GPU nodes, stored as dated points "
        "(price per GPU-hour, effective time, SKU); fetched on its own schedule.",
    )
    def book(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resources = context.resources
        client = getattr(resources, resource)
        store: CostStore = resources.store
        return build_book(
            context,
            provider,
            store,
            resources.usage_source,
            _fetcher(provider, client, store),
        )

    return book


def _fetcher(provider: str, client: AwsPrices | GcpPrices | AzurePrices, store: CostStore) -> Fetch:
    if provider == "aws":

        def fetch_aws(targets, now, log):
            with store.connection() as conn:
                until = price_book.spot_fetched_until(conn, "aws")
            since = {
                region: max(
                    until.get(region, now - SPOT_FIRST_FETCH) - SPOT_OVERLAP,
                    now - SPOT_HISTORY_LIMIT,
                )
                for region in targets
            }
            return client.fetch(targets, since, now, log)

        return fetch_aws
    if provider == "gcp":
        return lambda targets, now, log: client.fetch(sorted(targets), now, log)
    return lambda targets, now, log: client.fetch(targets, now, log)


aws_price_book = _book_asset(
    "aws", "AWS Price List (on-demand, reserved) and EC2 spot", "aws_prices"
)
gcp_price_book = _book_asset("gcp", "GCP Cloud Billing Catalog (or pricing export)", "gcp_prices")
azure_price_book = _book_asset("azure", "Azure Retail Prices (or RateCard)", "azure_prices")
PRICE_BOOKS = [aws_price_book, gcp_price_book, azure_price_book]


def _schedule(provider: str, asset) -> dg.ScheduleDefinition:
    settings = load_settings()

    @dg.schedule(
        name=f"{provider}_price_book_schedule",
        cron_schedule=settings.price_book_cron,
        execution_timezone="UTC",
        target=dg.AssetSelection.assets(asset),
        # The built-in demo has no cloud account: its schedules start stopped (turn them on in
        # the UI); a deployment reading a real cluster fetches from the start.
        default_status=dg.DefaultScheduleStatus.STOPPED
        if settings.source == "simulated"
        else dg.DefaultScheduleStatus.RUNNING,
        description=f"Fetch the {provider} price book when the cluster uses {provider}.",
    )
    def schedule(
        context: dg.ScheduleEvaluationContext, store: CostStore, usage_source: UsageSource
    ):
        now = datetime.now(UTC)
        if not book_targets(store, usage_source, provider, now):
            return dg.SkipReason(
                f"no {provider} GPU nodes seen in the last week and GPU_COST_CLOUD_PROVIDER "
                f"is {usage_source.default_provider}"
            )
        return dg.RunRequest()

    return schedule


PRICE_BOOK_SCHEDULES = [_schedule(p, a) for p, a in zip(PROVIDERS, PRICE_BOOKS, strict=True)]
