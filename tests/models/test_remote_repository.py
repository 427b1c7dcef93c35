"""The model repository on real object storage (SeaweedFS): a deploy pushes the version, a replica that lacks
it pulls it with every file's hash checked, a corrupt copy is refused, and an outage during a pull ends in the
version installed whole, never half."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import bentoml
import pytest
from prometheus_client import CollectorRegistry

from deploy.objectstore import SeaweedFS
from models import store
from models.importer import ImportOptions
from models.remote import ModelRepositorySettings, ObjectRepository, PullFailed
from models.remote.install import staging_root
from models.remote.manifest import Manifest
from models.remote.repository import Mismatch
from observability.metrics import Metrics
from runners.registry import ModelRegistry, VersionState
from runners.settings import ServingConfig
from tests.inprocess import serve_in_process
from tests.models.makers import iris_skops

pytestmark = pytest.mark.cache_independent
"""Pushes and pulls of stored versions: no request is answered."""


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def repository(s3: SeaweedFS, **settings) -> ObjectRepository:
    env = s3.env(f"s3://rtserve-test/{uuid.uuid4().hex[:8]}")
    return ObjectRepository(ModelRepositorySettings(
        url=env["RTSERVE_MODEL_REPOSITORY"], endpoint_url=s3.endpoint, access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1", backoff_s=0.05, backoff_max_s=0.5,
        timeout_s=2, **settings))


@pytest.fixture(scope="module")
def deployed(s3, tmp_path_factory, model_store) -> tuple[ObjectRepository, str]:
    """A version deployed through a replica whose deploys push to the repository: (repository, its tag)."""
    import asyncio

    remote = repository(s3)
    name = f"remote-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("deploy")

    async def deploy() -> None:
        async with serve_in_process(tmp, {"digits-sklearn": {"versions": ["v1"]}}, routing=True, remote=remote) as svc:
            await svc.runtime.parts.deployer.deploy(name, "v1", iris_skops(tmp).path, ImportOptions())
            assert svc.runtime.registry.get(name, "v1").state is VersionState.READY

    asyncio.run(deploy())
    return remote, f"{name}:v1"


@pytest.fixture
def pushed(deployed) -> Iterator[tuple[ObjectRepository, str, str]]:
    """A copy of the deployed version under a version of the test's own, pushed, then gone from this store."""
    remote, tag = deployed
    source = bentoml.models.get(tag)
    name, version = source.tag.name, uuid.uuid4().hex[:8]
    store.create(f"{name}:{version}", dict(source.info.metadata),
                 lambda folder: shutil.copytree(source.path, folder, dirs_exist_ok=True,
                                                ignore=shutil.ignore_patterns("model.yaml")))
    remote.push(f"{name}:{version}")
    store.delete(f"{name}:{version}")
    yield remote, name, version
    if store.exists(f"{name}:{version}"):
        store.delete(f"{name}:{version}")


def test_deploy_pushes_the_version_and_a_replica_without_it_pulls_it_checked(deployed) -> None:
    remote, tag = deployed
    name, version = tag.split(":")
    local = bentoml.models.get(tag)
    manifest = remote.manifest(name, version)
    assert manifest is not None and "model.yaml" in manifest.files
    assert manifest.metadata["format"] == local.info.metadata["format"] == "skops"
    assert manifest.sha256 == Manifest.of_directory(name, version, Path(local.path), {}).sha256
    assert remote.versions(name) == [version]

    store.delete(tag)  # this replica now lacks it, as one that never saw the deploy
    metrics = Metrics(CollectorRegistry())
    registry = ModelRegistry(ServingConfig.model_validate({"models": {}}), metrics, remote=remote)
    entry = registry.load(name, version)
    assert entry.state is VersionState.READY, entry.error
    assert metrics.pulls.labels(name, version, "pulled")._value.get() == 1
    manifest.check(Path(bentoml.models.get(tag).path))


def test_a_corrupt_object_is_refused_and_nothing_is_installed(s3, pushed) -> None:
    remote, name, version = pushed
    impatient = ObjectRepository(remote.settings.model_copy(update={"pull_deadline_s": 0.3}))
    manifest = remote.manifest(name, version)
    model_file = next(rel for rel in manifest.files if rel != "model.yaml")
    fs = remote._fs()
    fs.pipe_file(f"{remote.settings.root}/{name}/{version}/files/{model_file}", b"not the model")

    metrics = Metrics(CollectorRegistry())
    entry = ModelRegistry(ServingConfig.model_validate({"models": {}}), metrics, remote=impatient).load(name, version)
    assert entry.state is VersionState.FAILED and "SHA-256" in entry.error, entry.error
    assert metrics.pulls.labels(name, version, "failed")._value.get() == 1
    assert metrics.pulls.labels(name, version, "attempt_failed")._value.get() >= 1
    assert not store.exists(f"{name}:{version}")
    assert not [p for p in staging_root().iterdir() if p.name.startswith(f"{name}@") and p.is_dir()]
    with pytest.raises(PullFailed, match="SHA-256"):
        impatient.pull(name, version)


def test_an_outage_during_a_pull_recovers_without_a_half_installed_version(s3, pushed) -> None:
    remote, name, version = pushed
    failures: list[str] = []
    outage_seen = threading.Event()

    def retried(attempt: int, error: Exception) -> None:
        failures.append(f"{type(error).__name__}: {error}")
        assert not store.exists(f"{name}:{version}")  # never half there while the storage is away
        outage_seen.set()

    s3.stop()
    result: list[object] = []
    puller = threading.Thread(target=lambda: result.append(remote.pull(name, version, on_retry=retried)))
    puller.start()
    try:
        assert outage_seen.wait(60)
    finally:
        s3.start()
    puller.join(120)
    assert result == [True] and failures
    local = bentoml.models.get(f"{name}:{version}")
    remote.manifest(name, version).check(Path(local.path))


def test_the_same_version_with_other_files_is_refused(pushed) -> None:
    remote, name, version = pushed
    remote.pull(name, version)
    model = bentoml.models.get(f"{name}:{version}")
    remote.push(f"{name}:{version}")  # the same files again: nothing to do
    (Path(model.path) / "extra.txt").write_text("changed")
    with pytest.raises(Mismatch, match="other files"):
        remote.push(f"{name}:{version}")


def test_settings_read_the_standard_aws_variables(monkeypatch) -> None:
    monkeypatch.setenv("RTSERVE_MODEL_REPOSITORY", "s3://bucket/some/prefix/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("RTSERVE_MODEL_REPOSITORY_REGION", "us-east-2")
    s = ModelRepositorySettings()
    assert (s.url, s.root, s.endpoint_url, s.region) == ("s3://bucket/some/prefix", "bucket/some/prefix",
                                                          "http://127.0.0.1:9000", "us-east-2")
    monkeypatch.setenv("RTSERVE_MODEL_REPOSITORY", "bucket/prefix")
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        ModelRepositorySettings()


def test_a_version_the_repository_does_not_hold_fails_at_once(s3) -> None:
    remote = repository(s3)  # the default pull deadline: ten minutes, not waited for here
    entry = ModelRegistry(ServingConfig.model_validate({"models": {}}), remote=remote).load("nowhere", "v1")
    assert entry.state is VersionState.FAILED and "holds no nowhere:v1" in entry.error, entry.error
