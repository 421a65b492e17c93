"""CostAttribution/CostBudget specs: the seed's examples parse, bad input names the object and
the field, and the CRDs' OpenAPI schemas agree with the models on what is valid."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from gpu_cost_pipeline.core.specs import Scope, parse_object, parse_yaml

REPO = Path(__file__).parents[1]
CRDS = {
    "CostBudget": REPO / "deploy/crds/costbudgets.yaml",
    "CostAttribution": REPO / "deploy/crds/costattributions.yaml",
}
EXAMPLES = [
    REPO / "deploy/examples/seed-examples.yaml",
    *sorted((REPO / "examples/simulated").glob("*.yaml")),
]


def budget(spec: dict, name: str = "b") -> dict:
    return {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": spec,
    }


def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    crd = yaml.safe_load(CRDS[kind].read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # OpenAPI v3.0 schemas use draft-4 keywords (boolean exclusiveMinimum); x-kubernetes-*
    # extensions are unknown keywords and ignored.
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_parse_and_pass_the_crd_schemas(path: Path):
    specs = parse_yaml(path.read_text(), str(path))
    assert specs.problems == []
    assert specs.budgets or specs.attributions
    for document in yaml.safe_load_all(path.read_text()):
        crd_validator(document["kind"]).validate(document)


def test_the_seed_budget_reads_as_written():
    (spec,) = parse_yaml((REPO / "deploy/examples/seed-examples.yaml").read_text(), "seed").budgets[
        :1
    ]
    assert spec.ref.name == "data-science-budget"
    assert spec.spec.monthlyLimit == 15000
    assert spec.scope == Scope(teams=("data-science",))
    (alert,) = spec.spec.alerts
    assert (alert.name, alert.thresholdPercent, alert.severity) == ("budget-warning", 80, "warning")
    assert spec.spec.enforcement.throttleConfig.maxSpotInstances == 5


INVALID = [
    ({"monthlyLimit": 0}, "spec.monthlyLimit", "greater than 0"),
    ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 0}]},
     "spec.alerts[0].thresholdPercent", "greater than 0"),
    ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 1001}]},
     "spec.alerts[0].thresholdPercent", "less than or equal to 1000"),
    ({"monthlyLimit": 10, "enforcement": {"action": "shutdown"}}, "spec.enforcement.action",
     "expected 'alert', 'throttle' or 'block'"),
    ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 50,
                                      "channels": [{"type": "sms", "config": {}}]}]},
     "spec.alerts[0].channels[0].type", "expected"),
    ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 50,
                                      "channels": [{"type": "slack", "config": {"webhook_url": "hooks.slack.com/x"}}]}]},
     "spec.alerts[0].channels[0]", "config.webhook_url is not an http(s) URL"),
    ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 50,
                                      "channels": [{"type": "pagerduty"}]}]},
     "spec.alerts[0].channels[0]", "needs routing_key"),
    ({"monthlyLimit": 10, "enforcement": {"action": "throttle"}}, "spec.enforcement",
     "throttleConfig.maxSpotInstances"),
    ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercnt": 50}]},
     "spec.alerts[0].thresholdPercnt", "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "message"), INVALID)
def test_an_invalid_budget_names_object_field_and_problem(spec: dict, field: str, message: str):
    specs = parse_object(budget(spec), "budgets.yaml")
    assert specs.budgets == []
    rendered = [str(p) for p in specs.problems]
    assert any(
        line.startswith(f"CostBudget ml/b (budgets.yaml): {field}: ") and message in line
        for line in rendered
    ), rendered


@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        ({"monthlyLimit": 10}, True),
        ({"monthlyLimit": 0}, False),
        ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 1000}]}, True),
        ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 1000.5}]}, False),
        ({"monthlyLimit": 10, "enforcement": {"action": "block"}}, True),
        ({"monthlyLimit": 10, "enforcement": {"action": "shutdown"}}, False),
        ({"monthlyLimit": 10, "alerts": [{"name": "a", "thresholdPercent": 5,
                                          "channels": [{"type": "sms"}]}]}, False),
    ],
)  # fmt: skip
def test_the_crd_schema_agrees_with_the_model(spec: dict, valid: bool):
    assert crd_validator("CostBudget").is_valid(budget(spec)) == valid
    assert (parse_object(budget(spec), "x").problems == []) == valid


@pytest.mark.parametrize(("days", "valid"), [(1, True), (365, True), (0, False), (366, False)])
def test_retention_days_bounds(days: int, valid: bool):
    document = {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostAttribution",
        "metadata": {"name": "a"},
        "spec": {"team": "x", "retentionDays": days},
    }
    assert crd_validator("CostAttribution").is_valid(document) == valid
    problems = parse_object(document, "x").problems
    assert (problems == []) == valid
    if not valid:
        assert problems[0].field == "spec.retentionDays"


def test_a_broken_file_is_one_problem_and_other_kinds_are_ignored():
    broken = parse_yaml("apiVersion: v1\nkind: [unclosed\n", "bad.yaml")
    assert len(broken.problems) == 1 and "bad.yaml" in str(broken.problems[0])
    assert "line" in str(broken.problems[0])
    mixed = parse_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n"
        + yaml.safe_dump(budget({"monthlyLimit": 5})),
        "mixed.yaml",
    )
    assert mixed.problems == [] and [b.ref.name for b in mixed.budgets] == ["b"]


def test_one_bad_object_leaves_the_others():
    text = "\n---\n".join(
        yaml.safe_dump(d)
        for d in (budget({"monthlyLimit": 5}, "good"), budget({"monthlyLimit": -1}, "bad"))
    )
    specs = parse_yaml(text, "two.yaml")
    assert [b.ref.name for b in specs.budgets] == ["good"]
    assert [p.ref.name for p in specs.problems] == ["bad"]


def test_attribution_tags_match_as_labels_and_must_agree_with_them():
    document = {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostAttribution",
        "metadata": {"name": "a"},
        "spec": {"team": "t", "labels": {"a": "1"}, "tags": {"b": "2"}},
    }
    (attribution,) = parse_object(document, "x").attributions
    assert attribution.scope.labels == (("a", "1"), ("b", "2"))
    document["spec"]["tags"] = {"a": "other"}
    assert "different values for a" in str(parse_object(document, "x").problems[0])
