"""`score-server`: init, serve, token, study, audit, demo. Parsing and printing only."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from sqlalchemy import select

from pyscore import __version__
from pyscore.server.settings import MiB, Settings

EXIT_USAGE = 2


class CommandError(Exception):
    """A one-line message for stderr and a non-zero exit."""


def _open(data_dir: str):
    from pyscore.server.platform import Platform

    settings = Settings.load(data_dir)
    if not (Path(data_dir) / "server.json").exists():
        raise CommandError(
            f"{data_dir} is not a pyscore data directory; run "
            f"'score-server init --data-dir {data_dir}' first"
        )
    return Platform.open(settings)


def cmd_init(args: argparse.Namespace) -> None:
    from pyscore.server import auth, keys, metadata, objects
    from pyscore.server.db import Database, migrate
    from pyscore.server.platform import Platform
    from pyscore.server.store import open_store

    data_dir = Path(args.data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise CommandError(
            f"{data_dir} already exists and is not empty; nothing was changed "
            "(use a new directory, or 'serve' this one)"
        )
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
        migrate(settings.database_url)
        db = Database(settings.database_url)
        with db.session() as s:
            keys.ensure(s)
            metadata.seed_analysis_types(s)
        settings.save()
        platform = Platform.open(settings)
        platform.store.put_bytes(objects.SENTINEL, b"heliograph")
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

    from pyscore.server.db import migrate
    from pyscore.server.identity import Identity
    from pyscore.server.web import multiproc
    from pyscore.server.web.workers import SERVER_PID

    settings = Settings.load(args.data_dir)
    if not (Path(args.data_dir) / "server.json").exists():
        raise CommandError(
            f"{args.data_dir} is not a pyscore data directory; run "
            f"'score-server init --data-dir {args.data_dir}' first"
        )
    _check_port_free(args.host, args.port)
    _warn_if_readable(Path(args.data_dir))
    try:
        Identity.from_settings(settings.identity)  # a mistake is said here, not per worker
    except (ValueError, TypeError) as exc:
        raise CommandError(f"identity settings: {exc}") from None
    migrate(settings.database_url)
    _rebuild_repository_if_empty(settings)
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
            print(
                f"New signing key {fresh['id']} signs from now on (servers pick it up within "
                f"{keys.REFRESH:.0f} s); "
                + (
                    "every URL signed before is void"
                    if args.drop_old
                    else f"{len(ring) - 1} older key(s) still verify the URLs they signed"
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
    from pyscore.server.db import utcnow
    from pyscore.server.tables import Token

    platform = _open(args.data_dir)
    with platform.db.session() as s:
        if args.token_command == "create":
            scopes = [x for x in args.scopes.replace(",", " ").split() if x]
            if not scopes:
                raise CommandError("--scopes needs at least one scope")
            try:
                expires = auth.parse_duration(args.expires_in) if args.expires_in else None
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


def cmd_study(args: argparse.Namespace) -> None:
    from pyscore.server import metadata
    from pyscore.server.errors import ApiError

    platform = _open(args.data_dir)
    with platform.db.session() as s:
        try:
            metadata.create_study(
                s,
                args.study_id,
                {
                    "name": args.name or args.study_id,
                    "organization": args.organization,
                    "description": args.description,
                },
            )
        except ApiError as exc:
            raise CommandError(exc.message) from None
    print(f"Created study {args.study_id}")


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


def cmd_demo(args: argparse.Namespace) -> None:
    from pyscore.server.demo.study import load_demo

    platform = _open(args.data_dir)
    out = Path(args.files_dir or Path(args.data_dir) / "demo-files")
    manifest = load_demo(platform, out, args.study_id, reads_per_contig=args.reads)
    print(f"Demo study {args.study_id} published; files generated in {out}", file=sys.stderr)
    print(manifest)


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
    init.add_argument("--data-dir", required=True)
    init.add_argument(
        "--database-url", help="default: SQLite in the data dir; or postgresql://user@host/db"
    )
    init.add_argument("--store", default="local", help="'local' (default) or s3://bucket[/prefix]")
    init.add_argument("--s3-endpoint")
    init.add_argument("--s3-region", default="us-east-1")
    init.add_argument("--s3-access-key")
    init.add_argument("--s3-secret-key")
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
    serve.add_argument("--data-dir", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="create, list or revoke access tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="print a new token (shown once)")
    create.add_argument("--data-dir", required=True)
    create.add_argument(
        "--scopes", required=True, help='e.g. "PROGRAMDATA-DEMO.READ" or "score.READ score.WRITE"'
    )
    create.add_argument("--expires-in", help="e.g. 30d, 12h (default: never)")
    create.add_argument("--user", default="user")
    lst = tsub.add_parser("list", help="list tokens (no secrets)")
    lst.add_argument("--data-dir", required=True)
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("--data-dir", required=True)
    revoke.add_argument("token_id")
    token.set_defaults(func=cmd_token)

    study = sub.add_parser("study", help="create a study")
    study.add_argument("--data-dir", required=True)
    study.add_argument("study_id")
    study.add_argument("--name")
    study.add_argument("--organization")
    study.add_argument("--description")
    study.set_defaults(func=cmd_study)

    sk = sub.add_parser(
        "signing-key", help="rotate or list the keys that sign the local store's URLs"
    )
    sksub = sk.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    rot = sksub.add_parser(
        "rotate", help="a new key signs; old ones verify until their URLs expire"
    )
    rot.add_argument("--data-dir", required=True)
    rot.add_argument(
        "--drop-old",
        action="store_true",
        help="void every URL signed so far (a leaked key): old keys stop verifying at once",
    )
    sklist = sksub.add_parser("list", help="key ids, creation times, which one signs")
    sklist.add_argument("--data-dir", required=True)
    sk.set_defaults(func=cmd_signing_key)

    aud = sub.add_parser(
        "audit",
        help="print the audit trail: who was granted or refused which controlled data, when",
        description="Records in the order they were made, oldest first. Times are UTC.",
    )
    aud.add_argument("--data-dir", required=True)
    aud.add_argument(
        "--since", help="from this time on: 2026-11-30, 2026-11-30T14:00, or 12h (ago)"
    )
    aud.add_argument("--until", help="before this time (same forms as --since)")
    aud.add_argument("--study", help="one study id")
    aud.add_argument("--object", help="one object id (or analysis id, for publish)")
    aud.add_argument("--subject", help="one principal: token id, subject or user name")
    aud.add_argument("--outcome", choices=["granted", "refused", "error"])
    aud.add_argument("--format", choices=["tsv", "json"], default="tsv", help="json: JSON lines")
    aud.set_defaults(func=cmd_audit)

    demo = sub.add_parser(
        "demo", help="generate, upload and publish a demo study; print the path of its manifest"
    )
    demo.add_argument("--data-dir", required=True)
    demo.add_argument("--study-id", default="DEMO")
    demo.add_argument(
        "--files-dir", help="where to generate the files (default: <data-dir>/demo-files)"
    )
    demo.add_argument("--reads", type=int, default=3000, help="reads per contig per BAM")
    demo.set_defaults(func=cmd_demo)
    from pyscore.server.importing.cli import add_parser as add_import  # needs CommandError

    add_import(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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

        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        kind = "database" if isinstance(exc, SQLAlchemyError) else type(exc).__name__
        print(
            f"score-server: error: {kind}: {reason[0] if reason else exc} (set "
            "PYSCORE_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
