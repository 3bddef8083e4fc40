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
NOT_FROM_ENV = ("data_dir", "extra")  # every other field may be PYSCORE_<FIELD>


class SettingsError(ValueError):
    """A setting that cannot be read; its message is one line for the operator."""


def from_env(name: str) -> str | None:
    """`PYSCORE_<NAME>`, or the contents of the file `PYSCORE_<NAME>_FILE` names (a mounted
    secret: the pepper, the database URL or S3 keys then sit in no environment, image or
    manifest). Surrounding whitespace, such as the newline `echo` leaves, is dropped."""
    key = ENV_PREFIX + name.upper()
    path = os.environ.get(key + "_FILE")
    if path is None:
        return os.environ.get(key)
    if key in os.environ:
        raise SettingsError(f"both {key} and {key}_FILE are set; keep one")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SettingsError(f"{key}_FILE: cannot read {path}: {reason}") from None


@dataclass
class Settings:
    """Every field is a key of `server.json`; each but `data_dir` and `extra` may be overridden
    by `PYSCORE_<FIELD>` in the environment (numbers as digits, true/false, lists
    comma-separated or as JSON, objects as JSON), or by the contents of the file
    `PYSCORE_<FIELD>_FILE` names (secrets mounted as files). The docstring under each field is
    its documentation: the settings reference of the docs site is generated from them, and the
    docs build fails on a field without one."""

    data_dir: Path
    """The platform's directory (`--data-dir`): server.json, and with the defaults the SQLite
    database and the local object store."""
    database_url: str = ""
    """SQLAlchemy URL of the database; empty: SQLite in the data directory. At scale:
    `postgresql://user@host/db` (extra `postgres`)."""
    store: str = "local"
    """Where object bytes live: `local` (files under the data directory, served by signed
    URLs of ours) or `s3://bucket[/prefix]` (presigned URLs: bytes never pass the server)."""
    s3_endpoint: str = ""
    """URL of the S3-compatible store (Ceph RGW, MinIO, AWS); empty: AWS's own."""
    s3_region: str = "us-east-1"
    """Region the S3 URLs are signed for."""
    s3_access_key: str = ""
    """S3 access key id (keep server.json private: it is written 0600)."""
    s3_secret_key: str = ""
    """S3 secret key."""
    s3_addressing_style: str = "path"
    """`path` (https://host/bucket/key) or `virtual` (https://bucket.host/key) S3 URLs."""
    s3_sign_part_range: bool = False
    """Presign each download part's Range into its URL, as the original score-server does
    (the store then serves exactly that range); default: one URL serves all parts."""
    s3_state_bucket: str = ""
    """A Score bucket adopted in place (`import score`): its state bucket
    (`bucket.name.state`, upload state and `.meta` files) when apart from the object bucket."""
    s3_partitions: int = 0
    """A Score bucket's partitions (`bucket.size.pool`): objects live in `<bucket>.<n>`, n
    the first `s3_partition_key_length` hex characters of the id mod this; 0: one bucket."""
    s3_partition_key_length: int = 0
    """A Score bucket's `bucket.size.key`: how many hex characters of an object id pick its
    partition."""
    part_size: int = 64 * MiB
    """Bytes per part of a new upload, which downloads keep (raised for very large objects to
    stay within S3's 10,000 parts). `init --part-size` takes MiB."""
    download_expiry_seconds: int = 6 * 3600
    """Lifetime of a download URL. Signed URLs outlive the token that got them (revoking a
    token stops new URLs, not these); clients renew expired ones, so a short lifetime costs a
    request, not a restart."""
    upload_expiry_seconds: int = 24 * 3600
    """Lifetime of an upload part's URL."""
    max_url_lifetime_seconds: int = 7 * 24 * 3600
    """No URL is signed or honoured for longer, whatever else asks for it."""
    url_signing_pepper: str = ""
    """Hex secret made at init: the local store's signing keys are HMAC(pepper, key in the
    database), so a copy of the database alone cannot sign URLs."""
    public_url: str = ""
    """How clients reach the server (behind a proxy, a DNS name), used in every URL it writes;
    empty: each request's own URL, and only `allowed_hosts` and the listening address's names
    are answered."""
    max_concurrent_requests: int = 32
    """API requests at work at once per process; more wait up to `queue_timeout_seconds` for
    a slot, then get 503 + Retry-After. Each process opens up to this + 8 database
    connections (PostgreSQL: keep processes x (this + 8) below its max_connections)."""
    queue_timeout_seconds: int = 10
    """How long a request waits for a slot before its 503."""
    max_body_bytes: int = 16 * MiB
    """Request bodies above this are refused with 413 (object bytes go to signed part URLs,
    bounded by their part instead)."""
    batch_max_ids: int = 1000
    """Ids one batch lookup or batch upload may ask for (pyscore's extension, advertised on
    every answer as `Pyscore-Batch: max=<n>`); 0 turns batches off."""
    token_cache_seconds: int = 5
    """A verified token is believed this long without asking the database again, so a token
    revoked (or expiring) is refused by every process within this many seconds; 0: always
    ask."""
    trusted_proxies: list = field(default_factory=list)
    """Addresses or networks (e.g. `["10.0.0.5"]`) of reverse proxies whose
    X-Forwarded-Proto/-Host/-For are believed; no one else's are."""
    allowed_hosts: list = field(default_factory=list)
    """With `public_url` unset: Host values answered besides the listening address's names."""
    cors_origins: list = field(default_factory=list)
    """Origins (`https://viewer.example.org`, `http://127.0.0.1:8000`) whose pages may read
    htsget, DRS, the metadata reads and the local store's signed URLs from a browser (CORS);
    `*`: any origin (open data). Empty: CORS off. An S3 store needs the same rule on its
    bucket: `score-server cors apply`."""
    viewer_reference: str = ""
    """Object id of a published FASTA (with its .fai) that the File Repository's genome
    viewer shows reads and variants against; CRAM needs it. Empty: BAM and VCF are shown on
    the sequences their own header names. `score-server demo` sets it to the demo's."""
    viewer_igv: str = ""
    """Directory holding igv.js (npm `igv`: its `dist/`, or an npm project with it) that the
    viewer page serves; empty: `<data-dir>/viewer` (`score-server viewer install`), else the
    copy scripts/setup.sh installs beside the package."""
    audit_log: str = ""
    """The audit trail is in the database; this also writes each record as a JSON line to a
    file (`-`: standard output), e.g. for a SIEM."""
    request_log: str = "-"
    """One JSON line per request: `-` standard error, `off`, or a file path."""
    identity: dict = field(default_factory=dict)
    """Identity providers whose bearers are accepted beside our own tokens: `oidc` (OpenID
    Connect JWTs), `introspection` (API keys), `passports` (GA4GH); see Identity providers."""
    events: list = field(default_factory=list)
    """Where analysis events (SONG's AnalysisMessage) go: a list of `{"kafka": {...}}`,
    `{"webhook": {...}}`, `{"maestro": {...}}` (env `PYSCORE_EVENTS` as JSON); see Analysis
    events."""
    song_server_id: str = "song.overture"
    """SONG's `song.id`: each event's `songServerId`, which Maestro takes for this server's
    repository code."""
    events_retry_seconds: float = 1.0
    """Pause after a failed delivery to an event sink, doubled after each failure in a row."""
    events_retry_max_seconds: float = 60.0
    """The longest pause between two tries of an event sink."""
    events_keep_days: int = 7
    """Delivered events are kept this long (`score-server events status`), then deleted."""
    extra: dict = field(default_factory=dict)
    """Free-form settings read by name; `repository_code` (default `PYSCORE`) is the
    repository column of the File Repository's manifests."""

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
        _write(self.data_dir / SETTINGS_FILE, body)

    @staticmethod
    def update(data_dir: Path | str, **changes: object) -> None:
        """Change fields of `server.json` itself (what the environment overrides stays out)."""
        path = Path(data_dir) / SETTINGS_FILE
        _write(path, {**json.loads(path.read_text()), **changes})

    @classmethod
    def load(cls, data_dir: Path | str) -> Settings:
        data_dir = Path(data_dir)
        path = data_dir / SETTINGS_FILE
        body = json.loads(path.read_text()) if path.exists() else {}
        body["data_dir"] = data_dir
        known = {f.name: f for f in fields(cls)}
        for name, f in known.items():
            env = None if name in NOT_FROM_ENV else from_env(name)
            if env is not None:
                if f.type == "int":
                    body[name] = int(env)
                elif f.type == "float":
                    body[name] = float(env)
                elif f.type == "bool":
                    body[name] = env.strip().lower() in ("1", "true", "yes", "on")
                elif f.type == "list" and env.lstrip().startswith("["):  # JSON
                    body[name] = json.loads(env)
                elif f.type == "list":  # comma-separated
                    body[name] = [x.strip() for x in env.split(",") if x.strip()]
                elif f.type == "dict":  # JSON
                    body[name] = json.loads(env)
                else:
                    body[name] = env
        return cls(**{k: v for k, v in body.items() if k in known})


def _write(path: Path, body: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.chmod(tmp, 0o600)  # may hold S3 credentials
    tmp.replace(path)
