"""`score-server`: init, migrate, serve, token, study, signing-key, audit, events, cors,
viewer, demo. Parsing and printing only."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

from sqlalchemy import select

from pyscore import __version__
from pyscore.server.settings import MiB, Settings, SettingsError
from pyscore.wire.tsv import row as tsv_row

EXIT_USAGE = 2


class CommandError(Exception):
    """A one-line message for stderr and a non-zero exit."""


def _require_driver(database_url: str) -> None:
    """PostgreSQL's driver is an optional extra: a platform on PostgreSQL without it is told
    what to install, before anything is made or opened."""
    from pyscore.server.db import normalize_url

    if not normalize_url(database_url).startswith("postgresql+psycopg"):
        return
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        raise CommandError(
            "a postgresql:// database needs the psycopg driver, which is not installed: "
            "pip install 'pyscore[postgres]'"
        ) from None


def _settings(data_dir: str) -> Settings:
    """The settings of an existing platform whose database this installation can open."""
    try:
        settings = Settings.load(data_dir)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    if not (Path(data_dir) / "server.json").exists():
        raise CommandError(
            f"{data_dir} is not a pyscore data directory; run "
            f"'score-server init --data-dir {data_dir}' first"
        )
    _require_driver(settings.database_url)
    return settings


def _open(data_dir: str):
    from pyscore.server.platform import Platform

    return Platform.open(_settings(data_dir))


def _writable(data_dir: Path) -> None:
    """A data directory (a container's volume) this account cannot write is said in one line,
    before a database or store error says it less plainly."""
    folder = data_dir if data_dir.exists() else data_dir.parent
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise CommandError(
            f"{folder} is not writable by this account (uid {os.getuid()}; the folder belongs "
            f"to uid {folder.stat().st_uid}): give it to this user, or use another --data-dir"
        )


def _bring_up(settings: Settings):
    """What every platform of this version holds, made where missing (init, migrate; safe to
    repeat): the database at this version's schema, the signing keys, the bundled analysis
    types, the File Repository view filled after an upgrade, the store's sentinel object."""
    from pyscore.server import keys, metadata, objects
    from pyscore.server.db import Database, migrate
    from pyscore.server.platform import Platform

    migrate(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as s:
        keys.ensure(s)
        metadata.seed_analysis_types(s)
    db.engine.dispose()
    _rebuild_repository_if_empty(settings)
    platform = Platform.open(settings)
    if platform.store.stat(objects.SENTINEL) is None:
        platform.store.prepare()
        platform.store.put_bytes(objects.SENTINEL, b"heliograph")
    return platform


def cmd_init(args: argparse.Namespace) -> None:
    from pyscore.server import auth
    from pyscore.server.store import open_store

    data_dir = Path(args.data_dir)
    _require_driver(args.database_url or "")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise CommandError(
            f"{data_dir} already exists and is not empty; nothing was changed "
            "(use a new directory, or 'serve' this one)"
        )
    _writable(data_dir)
    settings = Settings(
        data_dir=data_dir,
        database_url=args.database_url or "",
        store=args.store,
        s3_endpoint=args.s3_endpoint or "",
        s3_region=args.s3_region,
        s3_access_key=args.s3_access_key or "",
        s3_secret_key=args.s3_secret_key or "",
        s3_sign_part_range=args.s3_sign_part_range,
        part_size=args.part_size * MiB,
        public_url=args.public_url or "",
        url_signing_pepper=secrets.token_hex(32),
    )
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    # the database holds the signing keys and token hashes, the store every object: only
    # the operator's account may read them (files 0600 through the umask main() sets)
    os.chmod(data_dir, 0o700)
    try:
        open_store(settings, b"").prepare()  # reach the store first: fail before writing
        platform = _bring_up(settings)
        settings.save()
        with platform.db.session() as s:
            _, secret = auth.create_token(s, "admin", [auth.ADMIN])
    except BaseException:
        if created:  # leave no half-made platform behind to block a second attempt
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for child in data_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    print(f"Initialised pyscore platform in {data_dir}")
    print(f"Database: {settings.database_url.split('@')[-1]}")
    print(f"Object store: {settings.store}")
    print("Admin token (shown once; store it safely):")
    print(secret)


STOP_GRACE = 5  # seconds a worker has to finish its requests when the server stops


def cmd_serve(args: argparse.Namespace) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    from pyscore.server.identity import Identity
    from pyscore.server.web import multiproc
    from pyscore.server.web.workers import SERVER_PID

    settings = _settings(args.data_dir)
    _check_port_free(args.host, args.port)
    _warn_if_readable(Path(args.data_dir))
    if settings.store == "local" or settings.database_url.startswith("sqlite"):
        _writable(Path(args.data_dir))  # what the embedded database and store write
    try:
        Identity.from_settings(settings.identity)  # a mistake is said here, not per worker
    except (ValueError, TypeError) as exc:
        raise CommandError(f"identity settings: {exc}") from None
    _event_sinks(settings)
    _cors_origins(settings)
    _require_schema(settings, args.data_dir, args.wait_for_schema)
    os.environ["PYSCORE_DATA_DIR"] = str(Path(args.data_dir).resolve())
    os.environ["PYSCORE_BIND"] = f"{args.host}:{args.port}"  # edge.HostCheck's default names
    os.environ[SERVER_PID] = str(os.getpid())  # workers end with this process
    # every worker writes its metrics here; whichever answers /metrics adds them all up
    metrics_dir, ours = multiproc.prepare_dir(os.environ.get(multiproc.ENV, ""))
    os.environ[multiproc.ENV] = str(metrics_dir)
    print(
        f"pyscore {__version__} serving {args.data_dir} on http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        Granian(
            "pyscore.server.app:factory",
            factory=True,
            interface=Interfaces.ASGI,
            address=args.host,
            port=args.port,
            workers=args.workers,
            log_access=args.access_log,
            backlog=2048,
            # granian 2.5 (the last for Python 3.9) can deadlock stopping a worker (its
            # runtime joined while holding the GIL): without a bound the server never exits
            workers_kill_timeout=STOP_GRACE,
        ).serve()
    finally:
        if ours:
            multiproc.remove_dir(metrics_dir)


SCHEMA_POLL = 2.0  # seconds between looks at the schema while `serve --wait-for-schema` waits


def _require_schema(settings: Settings, data_dir: str, wait: float) -> None:
    """Servers never migrate (replicas starting together would migrate concurrently, and
    while older ones still serve): they serve a database that `score-server migrate` brought
    to their version, wait up to `wait` seconds for one, or refuse in one line."""
    from pyscore.server.db import schema_revisions

    deadline, waiting = time.monotonic() + wait, False
    while True:
        current, head, known = schema_revisions(settings.database_url)
        if current == head:
            return
        if not known:  # a newer version migrated it: the previous release keeps serving
            print(
                f"score-server: warning: the database schema ({current}) is newer than this "
                f"version's ({head}); serving it (upgrade this server)",
                file=sys.stderr,
            )
            return
        if time.monotonic() >= deadline:
            raise CommandError(
                f"the database schema is at {current or 'nothing (a new database)'} and this "
                f"version needs {head}: run 'score-server migrate --data-dir {data_dir}' once "
                "(the migration job), then start the servers"
            )
        if not waiting:
            waiting = True
            print(
                f"score-server: waiting up to {wait:g} s for 'score-server migrate' to bring "
                f"the database schema from {current or 'nothing'} to {head}",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(SCHEMA_POLL)


def cmd_migrate(args: argparse.Namespace) -> None:
    from pyscore.server.db import schema_revisions

    settings = _settings(args.data_dir)
    if settings.database_url.startswith("sqlite"):
        _writable(Path(args.data_dir))
    before, head, known = schema_revisions(settings.database_url)
    if not known:
        raise CommandError(
            f"the database schema ({before}) is newer than this version's ({head}); "
            "nothing was changed"
        )
    _bring_up(settings).db.engine.dispose()
    print(f"Database schema at {head} (was {before or 'nothing: a new database'})")


def _cors_origins(settings: Settings):
    """The CORS allow-list, or a one-line error naming the entry that is no origin."""
    from pyscore.server.web.cors import Origins

    try:
        return Origins(settings.cors_origins)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _warn_if_readable(data_dir: Path) -> None:
    """Platforms made before init set modes 0700/0600 may be readable by other accounts."""
    loose = [
        p
        for p in (data_dir, data_dir / "pyscore.sqlite", data_dir / "server.json")
        if p.exists() and p.stat().st_mode & 0o077
    ]
    if loose:
        print(
            f"score-server: warning: {', '.join(map(str, loose))} can be read by other "
            f"accounts; run: chmod -R go-rwx {data_dir}",
            file=sys.stderr,
        )


def cmd_signing_key(args: argparse.Namespace) -> None:
    from pyscore.server import keys

    platform = _open(args.data_dir)
    lifetime = platform.settings.max_url_lifetime_seconds
    with platform.db.session() as s:
        if args.key_command == "rotate":
            fresh = keys.rotate(s, lifetime, drop_old=args.drop_old)
            ring = keys.load_ring(s)
            # each process trusts its copy of the ring for keys.REFRESH seconds (KeyRing)
            within = f"within {keys.REFRESH:.0f} s"
            print(
                f"New signing key {fresh['id']}; running servers sign with it "
                + (
                    f"and stop honouring every older key's URLs {within} (when they reload "
                    "the key ring)"
                    if args.drop_old
                    else f"{within} (when they reload the key ring); {len(ring) - 1} older "
                    "key(s) still verify the URLs they signed"
                ),
                file=sys.stderr,
            )
            print(fresh["id"])
        else:
            print("id\tcreated\tstatus")
            ring = keys.ensure(s)
            for i, key in enumerate(ring):
                created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key["created"]))
                print(f"{key['id']}\t{created}\t{'signing' if i == len(ring) - 1 else 'verifying'}")


def _check_port_free(host: str, port: int) -> None:
    """granian binds with SO_REUSEPORT, which would let a second server share a busy port
    (and split requests between two platforms); refuse instead."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: connections of a previous run in TIME_WAIT do not count, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _rebuild_repository_if_empty(settings: Settings) -> None:
    """After upgrading from a version without the File Repository view, fill it once."""
    from sqlalchemy import func

    from pyscore.server import repository
    from pyscore.server.db import Database
    from pyscore.server.tables import Analysis, RepositoryEntry

    db = Database(settings.database_url)
    with db.session() as s:
        shown = s.scalar(select(func.count()).select_from(RepositoryEntry))
        published = s.scalar(
            select(func.count()).select_from(Analysis).where(Analysis.state == "PUBLISHED")
        )
        if not shown and published:
            repository.rebuild(s)
    db.engine.dispose()


def cmd_token(args: argparse.Namespace) -> None:
    from pyscore.server import auth
    from pyscore.server.db import parse_duration, utcnow
    from pyscore.server.tables import Token

    platform = _open(args.data_dir)
    with platform.db.session() as s:
        if args.token_command == "create":
            scopes = [x for x in args.scopes.replace(",", " ").split() if x]
            if not scopes:
                raise CommandError("--scopes needs at least one scope")
            try:
                expires = parse_duration(args.expires_in) if args.expires_in else None
                token, secret = auth.create_token(s, args.user, scopes, expires)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            print(
                f"Token {token.token_id} for {token.user}: {' '.join(token.scopes)}"
                + (f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if expires else ""),
                file=sys.stderr,
            )
            print(secret)
        elif args.token_command == "list":
            print("id\tuser\tscopes\tcreated\texpires\tstatus")
            for t in s.scalars(select(Token).order_by(Token.created_at)):
                status = (
                    "revoked" if t.revoked_at else "expired" if auth.expired_at(t) else "active"
                )
                until = f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never"
                print(
                    f"{t.token_id}\t{t.user}\t{' '.join(t.scopes)}\t"
                    f"{t.created_at:%Y-%m-%d %H:%M}\t{until}\t{status}"
                )
        elif args.token_command == "revoke":
            token = s.get(Token, args.token_id)
            if token is None:
                raise CommandError(f"No token with id {args.token_id}; see 'token list'")
            token.revoked_at = token.revoked_at or utcnow()
            print(f"Revoked token {token.token_id} ({token.user})")


STUDY_VERBS = ("create", "list")
STUDY_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # what a scope can name: PROGRAMDATA-<id>.READ


def _study_id(study_id: str) -> str:
    """A study id the admin commands make: never one of `study`'s verbs (`study create list`
    reads as a mistake), and one a scope can name."""
    if study_id.lower() in STUDY_VERBS:
        raise CommandError(
            f"'{study_id}' is a study command ({', '.join(STUDY_VERBS)}), not a study id; "
            "choose another id"
        )
    if not STUDY_ID.fullmatch(study_id):
        raise CommandError(
            f"study id '{study_id}': use letters, digits, '.', '_' and '-' "
            "(scopes name it: PROGRAMDATA-<study>.READ)"
        )
    return study_id


def cmd_study(args: argparse.Namespace) -> None:
    from pyscore.server import metadata
    from pyscore.server.errors import ApiError
    from pyscore.server.tables import Study

    if args.study_command == "create":
        study_id = _study_id(args.study_id)
    platform = _open(args.data_dir)
    with platform.db.session() as s:
        if args.study_command == "list":
            print("id\tname\torganization")
            for study in s.scalars(select(Study).order_by(Study.study_id)):
                print(f"{study.study_id}\t{study.name or ''}\t{study.organization or ''}")
            return
        try:
            metadata.create_study(
                s,
                study_id,
                {
                    "name": args.name or study_id,
                    "organization": args.organization,
                    "description": args.description,
                },
            )
        except ApiError as exc:
            raise CommandError(exc.message) from None
    print(f"Created study {study_id}")


def _old_study_grammar(argv: list[str]) -> list[str]:
    """`score-server study [--data-dir D] STUDY_ID`, the form before `study create`: still
    taken, with a note. Its first word that is not an option is the verb when it is one (so
    `study --data-dir D list` lists, and makes no study named "list"), else the study id."""
    if argv[:1] != ["study"]:
        return argv
    rest = argv[1:]
    i = 0
    while i < len(rest) and rest[i].startswith("-"):
        if rest[i] in ("-h", "--help"):
            return argv
        i += 1 if "=" in rest[i] else 2  # each option of the old form takes a value
    if i >= len(rest):  # options, no verb: say the verb is missing, not what the options are
        return argv[:1]
    if rest[i] in STUDY_VERBS:
        return ["study", rest[i], *rest[:i], *rest[i + 1 :]]
    print(
        "score-server: warning: 'score-server study STUDY_ID' is deprecated; "
        "use 'score-server study create STUDY_ID'",
        file=sys.stderr,
    )
    return ["study", "create", *rest]


def cmd_audit(args: argparse.Namespace) -> None:
    from pyscore.server import audit

    platform = _open(args.data_dir)
    try:
        since = audit.parse_time(args.since) if args.since else None
        until = audit.parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with platform.db.session() as s:
        records = audit.query(
            s,
            since=since,
            until=until,
            study=args.study,
            object_id=args.object,
            subject=args.subject,
            outcome=args.outcome,
        )
        lines = (r.json() for r in records) if args.format == "json" else audit.tsv(records)
        out = sys.stdout
        try:
            for line in lines:
                out.write(line + "\n")
            out.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _event_sinks(settings: Settings) -> list[str]:
    """The names of the sinks of the `events` setting, or what is wrong in it."""
    from pyscore.server.events.sinks import from_settings

    try:
        return [s.name for s in from_settings(settings.events, settings.song_server_id)]
    except ValueError as exc:
        raise CommandError(f"events settings: {exc}") from None


SINK_COLUMNS = (
    "sink",
    "pending",
    "oldest_pending",
    "delivered",
    "failures",
    "failing_since",
    "last_error",
    "delivering",
)


def cmd_events(args: argparse.Namespace) -> None:
    from pyscore.server import audit
    from pyscore.server.events import outbox

    platform = _open(args.data_dir)
    names = _event_sinks(platform.settings)
    if args.events_command == "status":
        with platform.db.session() as s:
            found = outbox.status(s, names)
        print(tsv_row(SINK_COLUMNS))
        for st in found:
            cells = [
                st.name,
                st.pending,
                st.oldest_pending and audit.iso(st.oldest_pending),
                st.delivered,
                st.failures,
                st.failing_since and audit.iso(st.failing_since),
                st.last_error,
                st.owner or ("(not started)" if st.position is None else ""),
            ]
            print(tsv_row(cells))
        if not names:
            print("No event sinks are configured (the `events` setting)", file=sys.stderr)
        return
    if not names or (args.sink is not None and args.sink not in names):
        raise CommandError(
            f"no event sink named {args.sink!r}; configured: {', '.join(names) or 'none'}"
            if names
            else "no event sinks are configured (the `events` setting): nothing to replay to"
        )
    try:
        since = audit.parse_time(args.since)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    with platform.db.session() as s:
        for name in [args.sink] if args.sink else names:
            outbox.ensure_sink(s, name)  # a sink not started yet starts before these events
        batches = list(outbox.changed_since(s, since))
    count = 0
    for ids in batches:  # a transaction a batch: each batch is queued when committed
        with platform.db.session() as s:
            count += outbox.replay(s, ids, args.sink)
    print(
        f"Queued {count} event(s) for {f'sink {args.sink!r}' if args.sink else 'every sink'}: "
        f"what each analysis changed since {audit.iso(since)} is now"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    from pyscore.server.demo.study import load_demo, reference_of, studies_in

    study_id = _study_id(args.study_id)
    # each study's files apart: a second demo study must not rewrite the first's sources
    out = Path(args.files_dir or Path(args.data_dir) / "demo-files" / study_id)
    others = [s for s in studies_in(out) if s != study_id]
    if others:
        raise CommandError(
            f"{out} holds the demo files of study {others[0]}; give study {study_id} "
            "another --files-dir"
        )
    platform = _open(args.data_dir)
    manifest = load_demo(platform, out, study_id, reads_per_contig=args.reads)
    print(f"Demo study {args.study_id} published; files generated in {out}", file=sys.stderr)
    reference = reference_of(platform, study_id)
    if reference and not platform.settings.viewer_reference:
        Settings.update(args.data_dir, viewer_reference=reference)
        print(f"The genome viewer's reference is now reference.fa ({reference})", file=sys.stderr)
    print(manifest)


def cmd_cors(args: argparse.Namespace) -> None:
    import json

    from pyscore.server.web.cors import bucket_rule

    settings = _settings(args.data_dir)
    origins = _cors_origins(settings)
    if not origins:
        raise CommandError(
            "cors_origins is empty: list the origins first (server.json, or "
            "PYSCORE_CORS_ORIGINS=https://viewer.example.org)"
        )
    rule = bucket_rule(origins)
    if args.cors_command == "show":
        print(json.dumps(rule, indent=2))
        return
    if not settings.store.startswith("s3://"):
        raise CommandError(
            "the local store answers CORS itself (from cors_origins); 'cors apply' is for "
            "s3:// stores"
        )
    from pyscore.server.store.s3 import S3Store

    held = S3Store.from_settings(settings).put_cors(rule)
    bucket = settings.store[len("s3://") :].partition("/")[0]
    print(f"CORS rule applied to bucket {bucket}:", file=sys.stderr)
    print(json.dumps(held, indent=2))


def cmd_viewer(args: argparse.Namespace) -> None:
    import subprocess

    from pyscore.server.viewer import PACKAGE_DIR, igv_script

    settings = _settings(args.data_dir)
    npm = shutil.which("npm")
    if npm is None:
        raise CommandError("npm is not installed (Debian: apt-get install npm); igv.js is on npm")
    target = Path(args.data_dir) / "viewer"
    target.mkdir(exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PACKAGE_DIR / name, target / name)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(target), "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise CommandError(f"npm ci failed in {target}: {reason}")
    print(f"igv.js installed in {target} (the viewer serves it from the next request on)")
    if settings.viewer_igv:
        print(
            f"note: viewer_igv names {settings.viewer_igv}, so the server serves "
            f"{igv_script(settings) or 'nothing'} instead",
            file=sys.stderr,
        )


DATA_DIR_HELP = "the platform's directory (server.json; SQLite and objects by default)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="score-server",
        description=("A Song- and Score-compatible genomics data platform in one process."),
    )
    p.add_argument("--version", action="version", version=f"score-server {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser(
        "init", help="create a new platform (database, object store, admin token)"
    )
    init.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    init.add_argument(
        "--database-url", help="default: SQLite in the data dir; or postgresql://user@host/db"
    )
    init.add_argument("--store", default="local", help="'local' (default) or s3://bucket[/prefix]")
    init.add_argument("--s3-endpoint", help="URL of the S3-compatible store (default: AWS)")
    init.add_argument("--s3-region", default="us-east-1", help="default us-east-1")
    init.add_argument("--s3-access-key", help="S3 access key id")
    init.add_argument("--s3-secret-key", help="S3 secret key (stored in server.json, 0600)")
    init.add_argument(
        "--s3-sign-part-range",
        action="store_true",
        help="presign each download part's Range into its URL, as the original score-server "
        "does (the store then serves that exact range only); default: one URL for all parts",
    )
    init.add_argument("--part-size", type=int, default=64, help="part size in MiB (default 64)")
    init.add_argument(
        "--public-url",
        help="URL clients use to reach this server, if not the "
        "one they connect to (e.g. behind a proxy)",
    )
    init.set_defaults(func=cmd_init)

    serve = sub.add_parser("serve", help="serve the APIs")
    serve.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8080, help="default 8080")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.add_argument(
        "--wait-for-schema",
        type=float,
        default=0,
        metavar="SECONDS",
        help="when the database's schema is older than this version's, wait this long for "
        "'score-server migrate' (a migration job) before refusing; default 0: refuse at once",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="granian's access log as well (the JSON request log is setting request_log)",
    )
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser(
        "migrate",
        help="bring the database to this version's schema, once per upgrade, before its "
        "servers start (they never migrate); on a new database, make the platform (no token)",
    )
    mig.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    mig.set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="create, list or revoke access tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="print a new token (shown once)")
    create.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    create.add_argument(
        "--scopes", required=True, help='e.g. "PROGRAMDATA-DEMO.READ" or "score.READ score.WRITE"'
    )
    create.add_argument("--expires-in", help="e.g. 30d, 12h (default: never)")
    create.add_argument("--user", default="user", help="whose token (a name, for lists and logs)")
    lst = tsub.add_parser("list", help="list tokens (no secrets)")
    lst.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    revoke.add_argument("token_id", help="its id, from 'token list'")
    token.set_defaults(func=cmd_token)

    study = sub.add_parser("study", help="create or list studies")
    ssub = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    screate = ssub.add_parser(
        "create", help="create a study (its scopes: PROGRAMDATA-<STUDY_ID>.READ / .WRITE)"
    )
    screate.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    screate.add_argument("study_id", metavar="STUDY_ID", help="e.g. PACA-CA")
    screate.add_argument("--name", help="default: the study id")
    screate.add_argument("--organization", help="who holds the study")
    screate.add_argument("--description", help="free text")
    slist = ssub.add_parser("list", help="list studies: id, name, organization")
    slist.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    study.set_defaults(func=cmd_study)

    sk = sub.add_parser(
        "signing-key", help="rotate or list the keys that sign the local store's URLs"
    )
    sksub = sk.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    rot = sksub.add_parser(
        "rotate", help="a new key signs; old ones verify until their URLs expire"
    )
    rot.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    rot.add_argument(  # "10 s": keys.REFRESH, not imported here (it loads the tables)
        "--drop-old",
        action="store_true",
        help="void every URL signed so far (a leaked key): each running server stops honouring "
        "them when it next reloads the key ring, within 10 s; the URLs it signs until then "
        "stop too",
    )
    sklist = sksub.add_parser("list", help="key ids, creation times, which one signs")
    sklist.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    sk.set_defaults(func=cmd_signing_key)

    aud = sub.add_parser(
        "audit",
        help="print the audit trail: who was granted or refused which controlled data, when",
        description="Records in the order they were made, oldest first. Times are UTC.",
    )
    aud.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    aud.add_argument(
        "--since", help="from this time on: 2026-11-30, 2026-11-30T14:00, or 12h (ago)"
    )
    aud.add_argument("--until", help="before this time (same forms as --since)")
    aud.add_argument("--study", help="one study id")
    aud.add_argument("--object", help="one object id (or analysis id, for publish)")
    aud.add_argument("--subject", help="one principal: token id, subject or user name")
    aud.add_argument(
        "--outcome", choices=["granted", "refused", "error"], help="only records of this outcome"
    )
    aud.add_argument("--format", choices=["tsv", "json"], default="tsv", help="json: JSON lines")
    aud.set_defaults(func=cmd_audit)

    ev = sub.add_parser(
        "events",
        help="analysis events: what each sink has taken; send them again",
        description="Analysis events (SONG's AnalysisMessage) and their sinks (the `events` "
        "setting). Times are UTC.",
    )
    evsub = ev.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    evstatus = evsub.add_parser(
        "status", help="each sink: events waiting, since when, delivered, failures, last error"
    )
    evstatus.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    replay = evsub.add_parser(
        "replay",
        help="queue an event for each analysis changed since a time, saying what it is now "
        "(for an indexer that lost its data)",
    )
    replay.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    replay.add_argument(
        "--since",
        required=True,
        help="analyses changed from this time on: 2026-11-30, 2026-11-30T14:00, 12h (ago); "
        "1970-01-01 for all",
    )
    replay.add_argument("--sink", help="only for this sink (default: every sink)")
    ev.set_defaults(func=cmd_events)

    cors = sub.add_parser(
        "cors",
        help="the S3 bucket CORS rule that lets browsers of cors_origins read presigned URLs",
        description="Pages of the origins in cors_origins read htsget, DRS and signed URLs "
        "from a browser; with an S3 store, the bucket must answer CORS too.",
    )
    csub = cors.add_subparsers(dest="cors_command", required=True, metavar="ACTION")
    for name, what in (
        ("show", "print the rule (JSON, as put-bucket-cors takes it)"),
        ("apply", "put the rule on the configured S3 bucket, and print what the bucket holds"),
    ):
        action = csub.add_parser(name, help=what)
        action.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    cors.set_defaults(func=cmd_cors)

    view = sub.add_parser("viewer", help="the File Repository's genome viewer (igv.js, from npm)")
    vsub = view.add_subparsers(dest="viewer_command", required=True, metavar="ACTION")
    vinstall = vsub.add_parser(
        "install",
        help="install igv.js (the version locked in the package) with npm into "
        "<data-dir>/viewer, where the server finds it",
    )
    vinstall.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    view.set_defaults(func=cmd_viewer)

    demo = sub.add_parser(
        "demo", help="generate, upload and publish a demo study; print the path of its manifest"
    )
    demo.add_argument("--data-dir", required=True, help=DATA_DIR_HELP)
    demo.add_argument("--study-id", default="DEMO", help="default DEMO")
    demo.add_argument(
        "--files-dir",
        help="where to generate the files (default: <data-dir>/demo-files/<study-id>)",
    )
    demo.add_argument("--reads", type=int, default=3000, help="reads per contig per BAM")
    demo.set_defaults(func=cmd_demo)
    from pyscore.server.importing.cli import add_parser as add_import  # needs CommandError

    add_import(sub, DATA_DIR_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_old_study_grammar(sys.argv[1:] if argv is None else argv))
    os.umask(0o077)  # every file the platform writes (database, objects, logs) is 0600
    try:
        args.func(args)
    except CommandError as exc:
        print(f"score-server: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the operator; details on demand
        if os.environ.get("PYSCORE_DEBUG"):
            raise
        from sqlalchemy.exc import SQLAlchemyError

        from pyscore.server.errors import Unavailable

        shown: BaseException = exc
        if isinstance(exc, Unavailable) and exc.__cause__ is not None:
            # its message is for an HTTP client (retry later); the operator needs the cause
            kind, shown = exc.dependency.replace("_", " "), exc.__cause__
        else:
            kind = "database" if isinstance(exc, SQLAlchemyError) else type(exc).__name__
        reason = str(getattr(shown, "orig", None) or shown).strip().splitlines()
        print(
            f"score-server: error: {kind}: {reason[0] if reason else shown} (set "
            "PYSCORE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
