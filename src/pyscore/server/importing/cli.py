"""`score-server import song|score|verify`: parsing and printing only."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pyscore.server.cli import CommandError
from pyscore.server.settings import Settings


class Progress:
    """One line on stderr: rewritten in place on a terminal, else (a log) a line every few
    seconds of a long run."""

    EVERY = 5.0

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out, self.tty, self.last = out, out.isatty(), time.monotonic()

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not self.tty and now - self.last < self.EVERY:
            return
        self.last = now
        line = f"import: {what}: {done:,}/{total:,}"
        if self.tty:
            self.out.write("\r" + line + ("\n" if finished else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()


def _platform_db(data_dir: str) -> Any:
    """The platform's database, its schema brought up to date (import_marks)."""
    from pyscore.server.db import Database, migrate

    if not (Path(data_dir) / "server.json").exists():
        raise CommandError(
            f"{data_dir} is not a pyscore data directory; run "
            f"'score-server init --data-dir {data_dir}' first"
        )
    settings = Settings.load(data_dir)
    migrate(settings.database_url)
    return settings, Database(settings.database_url)


def table(rows: list[list[str]], out: TextIO = sys.stdout) -> None:
    """Columns aligned, the first row a header; numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(w) if cell.replace(",", "").isdigit() else cell.ljust(w)
            for cell, w in zip(row, widths)
        ]
        out.write("  ".join(cells).rstrip() + "\n")


OUTCOMES = ("new", "changed", "unchanged", "not imported")


def print_summary(summary: Any, dry_run: bool, out: TextIO = sys.stdout) -> None:
    rows = [["study", "records", *OUTCOMES]]
    for (study, what), counts in sorted(summary.counts.items()):
        rows.append([study, what, *(f"{counts.get(o, 0):,}" for o in OUTCOMES)])
    if len(rows) > 1:
        table(rows, out)
    else:
        out.write("SONG has no studies\n")
    if summary.skipped:
        out.write(f"\nNot imported ({len(summary.skipped):,}):\n")
        for study, what, key, why in summary.skipped:
            out.write(f"  {what} {key} (study {study}): {why}\n")
    if dry_run:
        out.write("\nDry run: nothing was written.\n")


def _with_song(args: argparse.Namespace, work: Any) -> Any:
    """`work(source)` on the SONG the arguments name; its failures as one line."""
    from pyscore.server.importing.records import SourceError

    try:
        if args.song_database:
            from pyscore.server.importing.song_db import SongDatabase

            source: Any = SongDatabase(args.song_database)
        else:
            from pyscore.server.importing.song_http import SongApi

            source = SongApi(args.song_url)
        try:
            return work(source)
        finally:
            source.close()
    except SourceError as exc:
        raise CommandError(str(exc)) from None


def cmd_import_song(args: argparse.Namespace) -> None:
    from pyscore.server.importing.song import SongImport

    _, db = _platform_db(args.data_dir)
    summary = _with_song(
        args,
        lambda source: SongImport(
            db, source, dry_run=args.dry_run, progress=Progress(), page_size=args.page_size
        ).run(),
    )
    print_summary(summary, args.dry_run)


def cmd_import_verify(args: argparse.Namespace) -> None:
    from pyscore.server.importing.score import BucketError
    from pyscore.server.importing.verify import Verdict, verify_objects, verify_song
    from pyscore.server.store import open_store

    settings, db = _platform_db(args.data_dir)
    verdict = Verdict()
    _with_song(args, lambda source: verify_song(db, source, verdict, Progress()))
    try:
        verify_objects(db, open_store(settings, b""), verdict)
    except BucketError as exc:
        raise CommandError(str(exc)) from None
    rows = [["records", "compared", "equal", "different", "missing"]]
    rows += [[k, *(f"{n:,}" for n in v)] for k, v in verdict.rows.items()]
    table(rows)
    if verdict.problems:
        sys.stdout.write(f"\nDifferences ({len(verdict.problems):,}):\n")
        sys.stdout.writelines(f"  {line}\n" for line in verdict.problems)
    if not verdict.equal:
        sys.stdout.flush()
        raise SystemExit(1)
    print("\nEverything SONG and Score have is here, equal.")


def _s3_url(url: str, what: str) -> tuple[str, str]:
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise CommandError(f"{what} must be s3://bucket[/prefix], not {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def score_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """The platform's settings with Score's bucket as its store, as `args` describe it (S3
    options not given: the platform's own)."""
    from dataclasses import replace

    bucket, prefix = _s3_url(args.bucket, "--bucket")
    state = ""
    if args.state_bucket:
        state, state_prefix = _s3_url(args.state_bucket, "--state-bucket")
        if state_prefix and state_prefix != prefix:
            raise CommandError(
                "Score keeps objects and .meta files under the same data directory: "
                f"--state-bucket's prefix {state_prefix!r} differs from --bucket's {prefix!r}"
            )
    if args.partitions < 0 or (args.partitions and not 1 <= args.partition_key_length <= 7):
        raise CommandError(
            "--partitions N needs --partition-key-length K, 1..7 (Score's bucket.size.key)"
        )
    ours = settings.store.startswith("s3://")
    return replace(
        settings,
        store=f"s3://{bucket}" + (f"/{prefix}" if prefix else ""),
        s3_endpoint=args.s3_endpoint or (settings.s3_endpoint if ours else ""),
        s3_region=args.s3_region or settings.s3_region,
        s3_access_key=args.s3_access_key or (settings.s3_access_key if ours else ""),
        s3_secret_key=args.s3_secret_key or (settings.s3_secret_key if ours else ""),
        s3_state_bucket="" if state == bucket else state,
        s3_partitions=args.partitions,
        s3_partition_key_length=args.partition_key_length if args.partitions else 0,
    )


def _saved(data_dir: str) -> Settings:
    """server.json as written (no PYSCORE_* environment), to write back."""
    import json
    from dataclasses import fields

    body = json.loads((Path(data_dir) / "server.json").read_text())
    known = {f.name for f in fields(Settings)}
    return Settings(**{**{k: v for k, v in body.items() if k in known}, "data_dir": data_dir})


STORE_FIELDS = (
    "store",
    "s3_endpoint",
    "s3_region",
    "s3_access_key",
    "s3_secret_key",
    "s3_state_bucket",
    "s3_partitions",
    "s3_partition_key_length",
)


def cmd_import_score(args: argparse.Namespace) -> None:
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy import func, select

    from pyscore.server.importing.score import BucketError, ScoreAdoption, reason
    from pyscore.server.objects import SENTINEL
    from pyscore.server.store.s3 import S3Store
    from pyscore.server.tables import StoredObject

    settings, db = _platform_db(args.data_dir)
    wanted = score_settings(settings, args)
    moving = settings.store != wanted.store
    if moving:
        with db.session() as s:
            own = s.scalar(select(func.count()).select_from(StoredObject)) or 0
        if own:
            raise CommandError(
                f"this platform keeps {own:,} objects in {settings.store}; adopt Score's "
                "bucket into a platform of its own (score-server init --store s3://...)"
            )
    store = S3Store.from_settings(wanted)
    for name in store.buckets():
        try:
            store.client.head_bucket(Bucket=name)
        except (ClientError, BotoCoreError) as exc:
            raise CommandError(f"cannot read s3://{name}: {reason(exc)}") from None
    adoption = ScoreAdoption(db, store, dry_run=args.dry_run, progress=Progress())
    try:
        adoption.scan()
    except BucketError as exc:
        raise CommandError(str(exc)) from None
    if not args.dry_run:
        try:
            store.client.head_object(Bucket=store.bucket, Key=store.data_key(SENTINEL))
        except ClientError:
            try:  # the object /download/ping signs (Score's sentinel, if Score had none)
                store.put_bytes(SENTINEL, b"heliograph")
            except (ClientError, BotoCoreError) as exc:
                raise CommandError(f"cannot write to s3://{store.bucket}: {reason(exc)}") from None
        saved = _saved(args.data_dir)
        if any(getattr(saved, f) != getattr(wanted, f) for f in STORE_FIELDS):
            for f in STORE_FIELDS:
                setattr(saved, f, getattr(wanted, f))
            saved.save()
        adoption.write()
    print_adoption(adoption.summary, args.dry_run)


def print_adoption(summary: Any, dry_run: bool, out: TextIO = sys.stdout) -> None:
    a = summary.adopted
    table(
        [
            ["objects", "count"],
            ["adopted (new)", f"{a.get('new', 0):,}"],
            ["adopted (changed)", f"{a.get('changed', 0):,}"],
            ["adopted before, unchanged", f"{a.get('unchanged', 0):,}"],
            ["not as SONG says: not served", f"{len(summary.mismatched):,}"],
            ["SONG files without an object", f"{len(summary.missing):,}"],
            ["objects without a SONG file", f"{len(summary.orphans):,}"],
            ["uploads in progress", f"{len(summary.uploads):,}"],
        ],
        out,
    )
    sections = [
        ("Not as SONG says (not served)", [f"{i}: {why}" for i, why in summary.mismatched]),
        ("SONG files without an object", [f"{i} ({name})" for i, name in summary.missing]),
        ("Objects without a SONG file (not served)", summary.orphans),
        (
            "Uploads in progress in Score: finish or abort them before the cutover",
            [f"{i} upload {u} (s3://{b})" for i, u, b in summary.uploads],
        ),
    ]
    for title, lines in sections:
        if lines:
            out.write(f"\n{title}:\n")
            out.writelines(f"  {line}\n" for line in lines)
    if dry_run:
        out.write("\nDry run: nothing was written.\n")


def _song_source(command: argparse.ArgumentParser, data_dir_help: str) -> None:
    """--data-dir, and the SONG to read: its database or its API."""
    command.add_argument("--data-dir", required=True, help=data_dir_help)
    where = command.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--song-database",
        metavar="URL",
        help="SONG's PostgreSQL, read-only: postgresql://user:password@host:port/song (fast)",
    )
    where.add_argument(
        "--song-url", metavar="URL", help="a running SONG's API: https://song.example.org"
    )


def add_parser(sub: Any, data_dir_help: str) -> None:
    """`score-server import ...`, added to the server's command line (whose --data-dir help
    it repeats)."""
    imp = sub.add_parser(
        "import",
        help="move a running SONG + Score platform onto this one, ids kept",
        description="Import SONG's metadata (song), adopt Score's objects in place (score), "
        "then compare everything with its source (verify). Each run is idempotent.",
    )
    isub = imp.add_subparsers(dest="import_command", required=True, metavar="SOURCE")
    song = isub.add_parser(
        "song",
        help="studies, analysis types, donors, specimens, samples and analyses of a SONG",
        description="Every id, state, state history, time, analysis type and version, file "
        "info and dynamic analysis data, verbatim. A second run changes nothing; a later one "
        "imports only what SONG took since.",
    )
    _song_source(song, data_dir_help)
    song.add_argument("--dry-run", action="store_true", help="report what would change only")
    song.add_argument(
        "--page-size", type=int, default=500, help="records per transaction (default 500)"
    )
    song.set_defaults(func=cmd_import_song)

    score = isub.add_parser(
        "score",
        help="adopt the objects of Score's bucket(s) in place (no byte copied)",
        description="One row per object from data/<id>.meta (else a HEAD), checked against "
        "SONG's file records; mismatches and objects without a SONG file are reported, not "
        "served. The platform then serves the bucket(s) as Score lays them out.",
    )
    score.add_argument("--data-dir", required=True, help=data_dir_help)
    score.add_argument(
        "--bucket", required=True, help="Score's bucket.name.object: s3://bucket[/prefix]"
    )
    score.add_argument("--state-bucket", help="Score's bucket.name.state, if apart: s3://bucket")
    score.add_argument(
        "--partitions", type=int, default=0, help="Score's bucket.size.pool (default 0)"
    )
    score.add_argument(
        "--partition-key-length", type=int, default=0, help="Score's bucket.size.key"
    )
    score.add_argument(
        "--s3-endpoint",
        help="the bucket's S3 endpoint (default: the platform's, for its own bucket)",
    )
    score.add_argument("--s3-region", help="its region (default: the platform's)")
    score.add_argument("--s3-access-key", help="an access key id that may read the bucket(s)")
    score.add_argument("--s3-secret-key", help="its secret key")
    score.add_argument("--dry-run", action="store_true", help="report what would change only")
    score.set_defaults(func=cmd_import_score)

    verify = isub.add_parser(
        "verify",
        help="compare every imported record and object with its source; exit 1 on a difference",
        description="Reads SONG again and compares every study, analysis type, donor, "
        "specimen, sample and analysis with pyscore's; every object with SONG's file record "
        "(size; MD5 where the bucket recorded one) and with the bucket.",
    )
    _song_source(verify, data_dir_help)
    verify.set_defaults(func=cmd_import_verify)
