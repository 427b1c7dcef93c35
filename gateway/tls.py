"""TLS on the HTTP and gRPC ports, from one certificate and key (environment prefix RTSERVE_TLS_).

HTTP gets it through BentoML's own SSL settings (the service's `ssl` configuration, which `bentoml serve`
hands to uvicorn), gRPC through `grpc.ssl_server_credentials`. Both ports then speak TLS only. Set
neither file to serve in the clear (behind a proxy or mesh that terminates TLS).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import grpc


class TlsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTSERVE_TLS_")

    certfile: Path | None = None
    """PEM certificate (with its chain) both ports present; set together with `keyfile`."""
    keyfile: Path | None = None
    """PEM private key of the certificate, unencrypted; readable by the service's user only."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("set both RTSERVE_TLS_CERTFILE and RTSERVE_TLS_KEYFILE, or neither")
        for path in (self.certfile, self.keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self

    @property
    def enabled(self) -> bool:
        return self.certfile is not None

    def bentoml_ssl(self) -> dict[str, Any]:
        """The service's `ssl` configuration for BentoML (empty: BentoML's default, no TLS)."""
        if not self.enabled:
            return {}
        return {"enabled": True, "certfile": str(self.certfile), "keyfile": str(self.keyfile)}

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        """Server credentials for the gRPC port; None serves it in the clear."""
        if self.certfile is None or self.keyfile is None:
            return None
        import grpc

        return grpc.ssl_server_credentials([(self.keyfile.read_bytes(), self.certfile.read_bytes())])
