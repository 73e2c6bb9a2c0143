"""Plans: loading (YAML/JSON), structural validation and DAG analysis."""

from __future__ import annotations

from maos.plan.analysis import PlanAnalysis, analyze_plan
from maos.plan.loader import load_plan, parse_plan_text, plan_from_data, read_plan_data
from maos.plan.validate import validate_plan

__all__ = [
    "PlanAnalysis",
    "analyze_plan",
    "load_plan",
    "parse_plan_text",
    "plan_from_data",
    "read_plan_data",
    "validate_plan",
]
