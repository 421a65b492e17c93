"""The ROI report's settings as a resource (the CLI builds the same from the settings)."""

from __future__ import annotations

import dagster as dg
import psycopg
from pydantic import Field

from gpu_cost_pipeline.core.recommendations import RecommendationSettings, recommend
from gpu_cost_pipeline.core.roi import Period, RoiFacts, RoiSettings, roi_report
from gpu_cost_pipeline.settings import Settings
from gpu_cost_pipeline.store import roi as roi_store


class RoiConfig(dg.ConfigurableResource):
    """Investment, waste baseline and recommendation thresholds (see the README's formulas)."""

    investment_monthly_usd: float = Field(default=0.0, ge=0)
    waste_baseline_share: float = Field(default=0.0, ge=0, le=1)
    idle_utilization: float = Field(default=0.05, ge=0, le=1)
    underutilized_utilization: float = Field(default=0.30, ge=0, le=1)
    waste_min_hours: float = Field(default=1.0, ge=0)
    interruptible_label: str = "gpu-autoscaler.io/interruptible"
    mig_convention: str = "compute"

    @classmethod
    def from_settings(cls, settings: Settings) -> RoiConfig:
        return cls(
            investment_monthly_usd=settings.investment_monthly_usd,
            waste_baseline_share=settings.waste_baseline_share,
            idle_utilization=settings.idle_utilization,
            underutilized_utilization=settings.underutilized_utilization,
            waste_min_hours=settings.waste_min_hours,
            interruptible_label=settings.interruptible_label,
            mig_convention=settings.mig_convention,
        )

    def roi_settings(self) -> RoiSettings:
        return RoiSettings(self.investment_monthly_usd, self.waste_baseline_share)

    def recommendation_settings(self) -> RecommendationSettings:
        return RecommendationSettings(
            idle_utilization=self.idle_utilization,
            underutilized_utilization=self.underutilized_utilization,
            min_hours=self.waste_min_hours,
            mig_convention=self.mig_convention,
        )

    def read_facts(self, conn: psycopg.Connection, period: Period) -> tuple[RoiFacts, int]:
        """The period's facts from the store (and how many whole days were derived now)."""
        return roi_store.period_facts(
            conn,
            period.cluster,
            period.start,
            period.end,
            self.interruptible_label,
            self.recommendation_settings(),
            period.team,
            period.namespace,
        )

    def report(self, facts: RoiFacts, period: Period) -> dict:
        """The ROI report of ``period`` from its facts."""
        return roi_report(
            facts, period, self.roi_settings(), recommend(facts, self.recommendation_settings())
        )
