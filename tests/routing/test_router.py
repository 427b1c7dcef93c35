"""The router in-process: weights, sticky experiments, the canary label, fallback and the shadow choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from core.errors import ModelNotFound
from routing.document import Experiment, Shadow
from routing.router import Router
from tests.routing.support import canary, routes


def experiment(variants: dict[str, float], mirror: float = 0.0, salt: str = "s1") -> Experiment:
    return Experiment(name="ab", variants=variants, control="v1", salt=salt, mirror_fraction=mirror, started_at=1.0)


def test_versions_are_chosen_in_proportion_to_their_weights() -> None:
    random.seed(7)
    router = Router({"m": routes({"v1": 75.0, "v2": 25.0})})
    picks = Counter(router.route("m")[0] for _ in range(8000))
    assert set(picks) == {"v1", "v2"}
    assert 0.72 < picks["v1"] / 8000 < 0.78  # about five standard deviations either side of 0.75
    assert {router.route("m")[1] for _ in range(100)} == {"stable"}  # no canary running


def test_a_zero_weight_version_is_loaded_but_never_chosen() -> None:
    router = Router({"m": routes({"v1": 100.0, "v2": 0.0})})
    assert {router.route("m")[0] for _ in range(500)} == {"v1"}


def test_an_experiment_keeps_each_user_on_one_variant_and_splits_users_by_weight() -> None:
    router = Router({"m": routes({"v1": 100.0}, experiment=experiment({"v1": 1.0, "v2": 3.0}))})
    users = [f"user-{i}" for i in range(4000)]
    first = {u: router.route("m", u) for u in users}
    assert all(router.route("m", u) == first[u] for u in users[:500])  # sticky
    assert {variant for _, variant in first.values()} == {"experiment"}
    share = sum(v == "v2" for v, _ in first.values()) / len(users)
    assert 0.72 < share < 0.78
    resalted = Router({"m": routes({"v1": 100.0}, experiment=experiment({"v1": 1.0, "v2": 3.0}, salt="s2"))})
    assert sum(resalted.route("m", u)[0] != first[u][0] for u in users) > 500  # a new salt reshuffles users


def test_a_running_canary_is_labelled_and_a_finished_one_is_not() -> None:
    random.seed(3)
    running = Router({"m": routes({"v1": 50.0, "v2": 50.0}, canary=canary())})
    labels = {running.route("m") for _ in range(200)}
    assert labels == {("v1", "stable"), ("v2", "canary")}
    promoted = Router({"m": routes({"v2": 100.0}, loaded=["v2"], canary=canary(status="promoted"))})
    assert promoted.route("m") == ("v2", "stable")


def test_fallback_takes_the_heaviest_ready_version() -> None:
    router = Router({"m": routes({"v1": 10.0, "v2": 90.0}, loaded=["v1", "v2", "v3"])})
    assert router.fallback("m", {"v1", "v2"}) == "v2"
    assert router.fallback("m", {"v1", "v3"}) == "v1"  # a weighted version before an unweighted one
    assert router.fallback("m", {"v3"}) == "v3"  # any ready version rather than none
    assert router.fallback("m", set()) is None


def test_the_shadow_is_the_configured_one_else_the_experiments_mirror() -> None:
    shadowed = routes({"v1": 100.0}, loaded=["v1", "v2", "v3"], shadow=Shadow(version="v3", fraction=0.2),
                      experiment=experiment({"v1": 1.0, "v2": 1.0}, mirror=0.5))
    mirrored = routes({"v1": 100.0}, experiment=experiment({"v1": 1.0, "v2": 1.0}, mirror=0.1))
    unmirrored = routes({"v1": 100.0}, experiment=experiment({"v1": 1.0, "v2": 1.0}))
    router = Router({"shadowed": shadowed, "mirrored": mirrored, "unmirrored": unmirrored, "plain": routes()})
    assert router.shadow("shadowed") == ("v3", 0.2)
    assert router.shadow("mirrored") == ("v2", 0.1)  # the variant that is not the control
    assert router.shadow("unmirrored") is None and router.shadow("plain") is None


def test_apply_replaces_the_models_it_is_given_and_keeps_the_others() -> None:
    router = Router({"a": routes({"v1": 100.0}), "b": routes({"v2": 100.0})})
    router.apply({"a": routes({"v2": 100.0})})
    assert router.routes("a").weights == {"v2": 100.0} and router.routes("b").weights == {"v2": 100.0}
    assert set(router.all_routes()) == {"a", "b"}
    assert router.route("a") == ("v2", "stable")


def test_an_unknown_model_is_model_not_found() -> None:
    router = Router({"m": routes()})
    for call in (lambda: router.route("x"), lambda: router.routes("x"), lambda: router.fallback("x", {"v1"}), lambda: router.shadow("x")):
        with pytest.raises(ModelNotFound, match="'x'"):
            call()
