"""Whose fault an outcome is: only the model's own call failing counts against a version."""

from __future__ import annotations

from core.errors import CANCELLED, ModelFailed, ServingError, blame_of


def test_only_the_model_call_failing_is_the_models_fault():
    assert blame_of(ModelFailed.code) == "model"
    # ModelFailed and its kinds (an output that does not match the signature): all the model's own, all model_error.
    assert {cls.code for cls in _all(ServingError) if cls.blame == "model"} == {"model_error"}
    assert all(issubclass(cls, ModelFailed) for cls in _all(ServingError) if cls.blame == "model")


def test_an_unanticipated_error_or_unknown_code_is_internal_never_the_models():
    assert blame_of("internal_error") == "internal" and blame_of("no-such-code") == "internal"
    assert blame_of(CANCELLED) == "client" and blame_of("invalid_input") == "client" and blame_of("queue_full") == "shed"


def _all(cls: type[ServingError]) -> list[type[ServingError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _all(sub))]
