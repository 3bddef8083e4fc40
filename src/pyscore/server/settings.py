"""Server settings: stored in `<data-dir>/server.json` at init, overridable by environment.

Every process that serves the same platform reads the same settings, so several stateless
processes behind a load balancer agree without talking to each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

MiB = 1024 * 1024
SETTINGS_FILE = "server.json"
ENV_PREFIX = "PYSCORE_"


@dataclass
class Settings:
    data_dir: Path
    database_url: str = ""
    store: str = "local"  # "local" or "s3://bucket[/prefix]"
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_addressing_style: str = "path"
    s3_sign_part_range: bool = False  # sign each download part's Range, as the original does
    # A Score bucket adopted in place: its state bucket (bucket.name.state) when apart from the
    # object bucket, and its partitions (bucket.size.pool / bucket.size.key): objects in
    # <bucket>.<n>, n = the first key-length hex characters of the id mod the partitions
    s3_state_bucket: str = ""
    s3_partitions: int = 0
    s3_partition_key_length: int = 0
    part_size: int = 64 * MiB
    # Signed URLs outlive the token that got them (revoking a token stops new URLs, not these):
    # downloads renew expired URLs, so short lifetimes cost a request, not a restart.
    download_expiry_seconds: int = 6 * 3600
    upload_expiry_seconds: int = 24 * 3600
    max_url_lifetime_seconds: int = 7 * 24 * 3600  # no URL is signed or honoured for longer
    url_signing_pepper: str = ""  # hex; signing keys are HMAC(pepper, key in the database)
    public_url: str = ""  # how clients reach us; default: the URL of each request
    # Requests of the APIs at work at once per process; more wait up to queue_timeout_seconds
    # for a slot, then get 503 + Retry-After. Each process opens up to this + 8 database
    # connections (PostgreSQL: keep processes x (this + 8) below its max_connections).
    max_concurrent_requests: int = 32
    queue_timeout_seconds: int = 10
    # Request bodies above this are refused with 413 (object bytes go to signed part URLs,
    # which are bounded by their part instead)
    max_body_bytes: int = 16 * MiB
    # Ids one batch lookup (POST /download/batch, /entities/batch: pyscore's extension,
    # advertised on every answer as `Pyscore-Batch: max=<n>`) may ask for; 0 turns them off
    batch_max_ids: int = 1000
    # A verified token is believed this long without asking the database again, so a token
    # revoked (or expiring) is refused by every process within this many seconds; 0 = always ask
    token_cache_seconds: int = 5
    # Behind a proxy: the addresses/networks whose X-Forwarded-Proto/-Host/-For are believed
    trusted_proxies: list = field(default_factory=list)
    # With public_url unset, Host values answered besides the listening address's names
    allowed_hosts: list = field(default_factory=list)
    # The audit trail is in the database; this also sends each record as a JSON line to a
    # file ("-": standard output), e.g. for a SIEM
    audit_log: str = ""
    # One JSON line per request: "-" standard error, "off", or a file path
    request_log: str = "-"
    # Identity providers whose bearers are accepted beside our own tokens (OpenID Connect
    # JWTs, introspected API keys, GA4GH passports): see identity/__init__.py and README
    identity: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'pyscore.sqlite'}"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    def save(self) -> None:
        body = asdict(self)
        body["data_dir"] = str(self.data_dir)
        path = self.data_dir / SETTINGS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        os.chmod(tmp, 0o600)  # may hold S3 credentials
        tmp.replace(path)

    @classmethod
    def load(cls, data_dir: Path | str) -> Settings:
        data_dir = Path(data_dir)
        path = data_dir / SETTINGS_FILE
        body = json.loads(path.read_text()) if path.exists() else {}
        body["data_dir"] = data_dir
        known = {f.name: f for f in fields(cls)}
        for name, f in known.items():
            env = os.environ.get(ENV_PREFIX + name.upper())
            if env is not None and name not in ("data_dir", "extra"):
                if f.type == "int":
                    body[name] = int(env)
                elif f.type == "bool":
                    body[name] = env.strip().lower() in ("1", "true", "yes", "on")
                elif f.type == "list":  # comma-separated
                    body[name] = [x.strip() for x in env.split(",") if x.strip()]
                elif f.type == "dict":  # JSON
                    body[name] = json.loads(env)
                else:
                    body[name] = env
        return cls(**{k: v for k, v in body.items() if k in known})
