"""The model repository in S3-compatible object storage: every replica's store filled from one place.

    remote = ObjectRepository.from_settings(ModelRepositorySettings())   # None when RTSERVE_MODEL_REPOSITORY is unset
    remote.push("iris:v2")      # after the probe passed: files, metadata and their SHA-256
    remote.pull("iris:v2")      # before a worker loads a version its store lacks: verified, then installed at once

Layout under `s3://bucket/prefix/`: `NAME/VERSION/files/...` (the store's directory, model.yaml included),
then `NAME/VERSION/manifest.json` (each file's size and SHA-256, the version's metadata and one digest over
them) written last, so a version is in the repository exactly when its manifest is.
"""

from models.remote.repository import ObjectRepository, PullFailed
from models.remote.settings import ModelRepositorySettings

__all__ = ["ModelRepositorySettings", "ObjectRepository", "PullFailed"]
