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
    """One line on stderr: rewritten in place on a terminal, else a line every few seconds."""

    EVERY = 5.0

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out, self.tty, self.last = out, out.isatty(), 0.0

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if not self.tty and not finished and now - self.last < self.EVERY:
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


def cmd_import_song(args: argparse.Namespace) -> None:
    from pyscore.server.importing.records import SourceError
    from pyscore.server.importing.song import SongImport

    _, db = _platform_db(args.data_dir)
    try:
        if args.song_database:
            from pyscore.server.importing.song_db import SongDatabase

            source: Any = SongDatabase(args.song_database)
        else:
            from pyscore.server.importing.song_http import SongApi

            source = SongApi(args.song_url)
        try:
            summary = SongImport(
                db, source, dry_run=args.dry_run, progress=Progress(), page_size=args.page_size
            ).run()
        finally:
            source.close()
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    print_summary(summary, args.dry_run)


def add_parser(sub: Any) -> None:
    """`score-server import ...`, added to the server's command line."""
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
    song.add_argument("--data-dir", required=True)
    where = song.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--song-database",
        metavar="URL",
        help="SONG's PostgreSQL, read-only: postgresql://user:password@host:port/song (fast)",
    )
    where.add_argument(
        "--song-url", metavar="URL", help="a running SONG's API: https://song.example.org"
    )
    song.add_argument("--dry-run", action="store_true", help="report what would change only")
    song.add_argument(
        "--page-size", type=int, default=500, help="records per transaction (default 500)"
    )
    song.set_defaults(func=cmd_import_song)
