"""What one `gallery serve` is told, in one JSON-serialisable record shared by all its workers."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gallery.settings import env_name, settings

ENV_VAR = env_name("serve_config")  # FACE_GALLERY_SERVE_CONFIG (formerly GALLERY_SERVE_CONFIG)
DEFAULT_MAX_UPLOAD_MB = 20  # one request body: a phone photo is 3-12 MB
DEFAULT_REQUEST_TIMEOUT_S = 60.0


@dataclass
class ServeConfig:
    gallery: str
    jobs_dir: str  # job records, shared by the workers of one server
    enrol_dir: str  # where photos uploaded for enrolment are kept (search crops are cut from them)
    auth: bool = True  # False: no keys exist and the server is on loopback (or --insecure)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    ingest_roots: list[str] = field(default_factory=list)  # server-side folders POST /v1/ingest may read
    device: str = "auto"
    host: str = "127.0.0.1"  # the address the server is bound to
    allowed_hosts: list[str] = field(default_factory=list)  # Host names a keyless server answers besides its address
    uploads_dir: str | None = None  # photos being searched, one folder per worker (default: a temporary folder)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = settings().serve_config
        if not raw:
            raise RuntimeError(f"{ENV_VAR} is not set: start the server with `gallery serve`.")
        return cls(**json.loads(raw))

    @property
    def gallery_path(self) -> Path:
        return Path(self.gallery)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True

