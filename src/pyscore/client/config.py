"""Client settings, resolved as the original score-client does, and told where each came from.

Precedence: command-line flag > environment > profile file > application.properties > default.
Files are Spring-style `key=value` properties: `application.properties` and, for `--profile P`,
`application-P.properties`, looked up in `$SCORE_CLIENT_CONF_DIR`, `./conf`, and
`~/.config/score-client` (first found wins for each file name).
"""

from __future__ import annotations

import builtins
import os
import stat
import sys
from pathlib import Path

DEFAULTS: dict[str, str] = {
    "accessToken": "",
    "metadata.url": "http://127.0.0.1:8080",
    "storage.url": "http://127.0.0.1:8080",
    "transport.parallel": "8",
    "storage.retryNumber": "10",
    "client.connectTimeoutSeconds": "30",
    "client.readTimeoutSeconds": "60",
    "metadata.ssl.enabled": "true",
    "view.htsget": "true",  # slice through the server's htsget tickets when it has them
}
# What each key means: the client settings reference of the docs is generated from this.
MEANINGS: dict[str, str] = {
    "accessToken": "the bearer sent to the metadata and storage services (never to the "
    "object store): a token of the platform, or a JWT or API key of its identity provider",
    "metadata.url": "the metadata service (Song API)",
    "storage.url": "the storage service (Score API); ours serves both on one URL",
    "transport.parallel": "connections for big bodies (`--parallel`); small requests get 32 more",
    "storage.retryNumber": "attempts for a request or part before it is reported failed",
    "client.connectTimeoutSeconds": "seconds to wait for a connection",
    "client.readTimeoutSeconds": "seconds to wait for the next bytes of an answer",
    "metadata.ssl.enabled": "`false` skips checking TLS certificates on the JSON API calls "
    "(object bytes are always checked)",
    "view.htsget": "`false`: `view` reads the data file over HTTP Range with its index, "
    "as against the original Score, instead of asking the server's htsget",
}
# The original client's settings that pyscore does not use: accepted without a word, so its
# configuration files work unchanged (score_reference.md §1.11).
ORIGINAL_KEYS = frozenset(
    {
        "storage.retryTimeout",
        "transport.memory",
        "transport.fileFrom",
        "download.partSize",
        "client.uploadStateDir",
        "client.ansi",
        "client.silent",
        "client.quiet",
        "client.retryLimit",
        "client.proxyUri",
        "client.awsAccessKey",
        "client.awsSecretKey",
        "client.parallelism",
        "portal.url",
        "mount.logging",
        "token.public-key",
        "defaultProfile",
        "azure.blockSize",
    }
)
ORIGINAL_PREFIXES = ("client.ssl.", "logging.", "spring.")
ENV_ALIASES = {"accessToken": ("ACCESSTOKEN", "ACCESS_TOKEN", "SCORE_ACCESS_TOKEN")}
INT_KEYS = (
    "transport.parallel",
    "storage.retryNumber",
    "client.connectTimeoutSeconds",
    "client.readTimeoutSeconds",
)


def env_names(key: str) -> tuple[str, ...]:
    """Spring's relaxed binding: metadata.url → METADATA_URL (plus a few documented aliases)."""
    return (*ENV_ALIASES.get(key, ()), key.upper().replace(".", "_").replace("-", ""))


def conf_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("SCORE_CLIENT_CONF_DIR"):
        dirs.append(Path(os.environ["SCORE_CLIENT_CONF_DIR"]))
    dirs += [Path.cwd() / "conf", Path.home() / ".config" / "score-client"]
    return dirs


def read_properties(path: Path) -> dict[str, str]:
    """Java properties, the subset people write: key=value or key: value, # and ! comments."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if sep < 0:
            continue
        out[line[:sep].strip()] = line[sep + 1 :].strip()
    return out


def warn_unknown_keys(path: Path, values: dict[str, str]) -> None:
    """A key neither we nor the original read is most likely a typo (`storage.urll`), which
    would otherwise leave the default in effect without a word: name the nearest key."""
    for key in values:
        if key in DEFAULTS or key in ORIGINAL_KEYS or key.startswith(ORIGINAL_PREFIXES):
            continue
        import difflib

        near = difflib.get_close_matches(key, [*DEFAULTS, *ORIGINAL_KEYS], n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        print(
            f"score-client: warning: {path}: unknown setting '{key}'{hint}; it is ignored",
            file=sys.stderr,
        )


def warn_if_readable_token(path: Path, values: dict[str, str]) -> None:
    """A properties file holding an access token should be the user's alone (0600); we read
    it, never write it, so say so rather than fix it."""
    if not values.get("accessToken"):
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        print(
            f"score-client: warning: {path} holds an access token and other users may read "
            f"it (mode {mode:04o}); run 'chmod 600 {path}'",
            file=sys.stderr,
        )


def _find(name: str) -> Path | None:
    for folder in conf_dirs():
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


class ClientSettings:
    """Each setting's value and where it came from. (A plain class: `dataclasses` costs
    every start ~8 ms of imports before the first request.)"""

    def __init__(
        self,
        values: dict[str, str] | None = None,
        sources: dict[str, str] | None = None,
        profile: str = "default",
    ) -> None:
        self.values = values if values is not None else {}
        self.sources = sources if sources is not None else {}
        self.profile = profile

    def get(self, key: str) -> str:
        return self.values.get(key, "")

    def int(self, key: str) -> int:
        return int(self.values[key])

    def origin(self, key: str) -> str:
        """Where a setting's value came from, said so the user knows what to change."""
        source = self.sources.get(key, "default")
        if source == "default":
            return f"the default; set {env_names(key)[-1]} or {key}"
        if source == "environment":
            return "set in the environment"
        if source == "command line":
            return "set on the command line"
        return f"set in {source} as {key}"

    @property
    def token(self) -> str:
        return self.get("accessToken")

    @property
    def metadata_url(self) -> str:
        return self.get("metadata.url").rstrip("/")

    @property
    def storage_url(self) -> str:
        return self.get("storage.url").rstrip("/")

    @property
    def parallel(self) -> builtins.int:
        return max(1, self.int("transport.parallel"))

    def shown(self) -> list[tuple[str, str, str]]:
        """(key, value, source) for `info`, with the token masked."""
        rows = []
        for key in sorted(self.values):
            value = self.values[key]
            if key == "accessToken" and value:
                value = value[:4] + "…" + value[-2:] if len(value) > 8 else "****"
            rows.append((key, value, self.sources.get(key, "default")))
        return rows


def resolve(
    flags: dict[str, str | None] | None = None, profile: str | None = None
) -> ClientSettings:
    """Settings from every source, highest precedence last applied."""
    profile = profile or os.environ.get("STORAGE_PROFILE") or "default"
    settings = ClientSettings(profile=profile)
    for key, value in DEFAULTS.items():
        settings.values[key] = value
        settings.sources[key] = "default"
    layers: list[tuple[str, dict[str, str]]] = []
    names = ["application.properties"]
    if profile != "default":
        names.append(f"application-{profile}.properties")
    for name in names:
        found = _find(name)
        if found:
            layers.append((str(found), read_properties(found)))
            warn_unknown_keys(found, layers[-1][1])
            warn_if_readable_token(found, layers[-1][1])
    env = {}
    for key in set(DEFAULTS) | {k for _, layer in layers for k in layer}:
        for name in env_names(key):
            if name in os.environ:
                env[key] = os.environ[name]
                break
    layers.append(("environment", env))
    layers.append(("command line", {k: v for k, v in (flags or {}).items() if v is not None}))
    for source, layer in layers:
        for key, value in layer.items():
            settings.values[key] = value
            settings.sources[key] = source
    for key in INT_KEYS:
        try:
            int(settings.values[key])
        except ValueError:
            from pyscore.client.errors import UsageError

            raise UsageError(
                f"{key}={settings.values[key]!r} (from {settings.sources[key]}) is "
                "not a whole number"
            ) from None
    return settings
