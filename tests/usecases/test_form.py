"""The authoring form is built from the schema and reads back exactly what it shows."""

from __future__ import annotations

import pytest

from pair.core.errors import Invalid
from pair.usecases import form
from pair.usecases.spec import UseCase, shipped


@pytest.mark.parametrize("uc", shipped(), ids=lambda uc: uc.id)
def test_shipped_use_cases_round_trip_through_the_form(uc: UseCase) -> None:
    back = form.document(form.values(uc.document))
    back["overview"]["version"] = uc.document["overview"]["version"]  # set by the node
    assert back == uc.document


def test_widgets_and_field_errors() -> None:
    kinds = {f.name: f.kind for f in form.all_fields()}
    assert kinds["evaluation_plan.primary_metric"] == "select"
    assert kinds["evaluation_plan.minimum_performance.value"] == "number"
    assert kinds["dataset_considerations.sizes.minimum_cases"] == "integer"
    assert kinds["overview.tags"] == "lines"
    assert kinds["technical_specifications.primary_outputs"] == "yaml"
    assert "overview.version" not in kinds  # the node sets it
    with pytest.raises(Invalid) as exc:
        form.document({"dataset_considerations.sizes.minimum_cases": "many"})
    assert exc.value.details == [
        "dataset_considerations/sizes/minimum_cases: 'many' is not an integer"
    ]
    errors = form.field_errors(
        [
            "overview: 'title' is a required property",
            "technical_specifications/primary_outputs/0/value_set/1: 'X' is not a value",
            "evaluation_plan/minimum_performance/value: 'a' is not of type 'number'",
        ]
    )
    assert set(errors) == {
        "overview.title",
        "technical_specifications.primary_outputs",
        "evaluation_plan.minimum_performance.value",
    }
