"""The routing state file's folder turns read-only under a steady load: an admin change is refused
with a clear JSON error (not a 500), serving goes on, and changes work again once it is writable."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.load import MODEL, SteadyLoad


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """The folder read-only even for root: a read-only bind mount onto itself, else the immutable flag."""
    for on, off, how in (
        (["mount", "--bind", "-o", "ro", str(folder), str(folder)], ["umount", str(folder)], "read-only bind mount"),
        (["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)], "immutable folder (chattr +i)"),
    ):
        if subprocess.run(on, capture_output=True, check=False).returncode == 0:
            try:
                yield how
            finally:
                subprocess.run(off, check=True, capture_output=True)
            return
    pytest.skip("cannot make a folder read-only here (needs root: mount or chattr)")


def set_weights(gateway, weights: dict[str, float]) -> httpx.Response:
    return httpx.put(
        f"{gateway.url}/admin/models/{MODEL}/weights",
        json={"weights": weights},
        headers=gateway.headers(scopes="admin"),
        timeout=30,
    )


def test_admin_change_with_an_unwritable_state_folder_is_refused_and_serving_goes_on(file_gateway, digits):
    rows, expected = digits
    folder = Path(file_gateway.server.env["RTSERVE_ROUTING_STATE_FILE"]).parent
    assert set_weights(file_gateway, {"v1": 100}).status_code == 200
    with SteadyLoad(file_gateway.url, file_gateway.headers(ttl=3600), rows, expected, rate=40, clients=2) as load:
        load.wait_for_answers(40)
        with read_only(folder) as how:
            refused = set_weights(file_gateway, {"v1": 100})
            load.wait_for_answers(40)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "unavailable" and "routing state" in refused.json()["error"], refused.text
        assert refused.headers["retry-after"]
        assert set_weights(file_gateway, {"v1": 100}).status_code == 200
        load.wait_for_answers(20)
    s = load.summary()
    print(f"\nstate folder made unwritable ({how}): admin change answered {refused.status_code} {refused.json()}; {s}")
    print(s.row("routing state folder read-only, admin change refused"))
    assert (s.failed, s.lost, s.wrong) == (0, 0, 0), s.by_status
