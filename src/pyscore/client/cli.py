"""`score-client`: the original's command line, parsed and dispatched. No logic lives here.

What a command needs is imported when it runs, and its first request leaves before the rest
of its machinery is imported (a start-up budget: tests/unit/test_import_layers.py lists what
may be loaded by then)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pyscore import __version__
from pyscore.client.config import resolve
from pyscore.client.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ScoreError,
    UsageError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

EPILOG = """exit codes:
  0  success
  1  some files failed (the others completed)
  2  usage error or bad input (options, manifest, a service URL that cannot work)
  3  authentication or permission refused (token, scope), even if other files arrived
  4  integrity failure (size or MD5 mismatch)
  5  server unreachable (after it had answered)
  130 interrupted (re-run the same command to resume)

settings (highest first): command-line options, environment (ACCESSTOKEN, METADATA_URL,
STORAGE_URL, STORAGE_PROFILE, TRANSPORT_PARALLEL, ...), conf/application-<profile>.properties,
conf/application.properties, defaults. `score-client info` shows what is in effect."""

COMMANDS = {
    "download": "Retrieve file object(s) from the remote storage repository",
    "view": "Locally store/display some or all of a remote SAM/BAM/CRAM/VCF file object",
    "upload": "Upload file object(s) to the remote storage repository",
    "submit": "Submit a Song analysis, upload its files and (optionally) publish it",
    "mount": "Mount a read-only FUSE file system view of the remote storage repository",
    "url": "Resolve the URL of a specified remote file object",
    "manifest": "Resolve a file object manifest and display it",
    "info": "Display application configuration information",
    "version": "Display application version information",
    "help": "Display help information for a specified command name",
}


# help texts several commands share
VERIFY_HELP = "first check that the storage service answers (default true)"
PARALLEL_HELP = "connections (default transport.parallel, 8)"
JSON_HELP = "newline-delimited JSON events on stdout"


def columns() -> int:
    """The terminal's width as shutil.get_terminal_size says it, without importing shutil
    (argparse would, ~3 ms of every start)."""
    try:
        width = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        width = 0
    if width <= 0:
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            width = 0
    return width if width > 0 else 80


class Formatter(argparse.HelpFormatter):
    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(
            prog, indent_increment, max_help_position, columns() - 2 if width is None else width
        )


class RawFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


HEX = frozenset("0123456789abcdef")


def object_id(text: str) -> str:
    lowered = text.lower()
    if len(text) == 36 and all(  # the usual form, without importing uuid
        (c == "-") if i in (8, 13, 18, 23) else (c in HEX) for i, c in enumerate(lowered)
    ):
        return lowered
    import uuid

    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    hint = ""
    if "," in text:  # ids listed as in a spreadsheet: say how to give several
        hint = f"; separate several ids with spaces: --object-id {' '.join(text.split(','))}"
    raise argparse.ArgumentTypeError(f"{text!r} is not an object id (a UUID){hint}")


def build_parser() -> Parser:
    p = Parser(
        prog="score-client",
        formatter_class=RawFormatter,
        description="Fast, resumable, verified transfers from Overture Score/Song "
        "compatible repositories (ICGC ARGO, pyscore).",
        epilog=EPILOG,
    )
    p.add_argument("--profile", help="settings profile (application-<profile>.properties)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, only messages")
    p.add_argument("--silent", action="store_true", help="nothing but errors")
    p.add_argument("--version", action="store_true", help="same as the version command")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    d = sub.add_parser(
        "download",
        help=COMMANDS["download"],
        epilog=EPILOG,
        formatter_class=RawFormatter,
    )
    src = d.add_argument_group("what to download (one of)")
    src.add_argument("--manifest", help="File Repository manifest TSV: path or URL")
    src.add_argument(
        "--object-id", nargs="+", type=object_id, metavar="ID", help="one or more object ids"
    )
    src.add_argument("--analysis-id", help="every file of an analysis (needs --study-id)")
    src.add_argument(
        "--study-id", "--program-id", dest="study_id", help="the study of --analysis-id"
    )
    d.add_argument("--output-dir", required=True, type=Path, help="where the files go")
    d.add_argument(
        "--output-layout",
        default="filename",
        type=str.lower,
        choices=("filename", "bundle", "id"),
        help="filename: <dir>/<file name> (default); bundle: <dir>/<analysis id>/<file name>; "
        "id: <dir>/<object id>",
    )
    d.add_argument(
        "--index",
        type=boolean,
        default=True,
        metavar="true|false",
        help="also fetch the index (.bai/.crai/.tbi) (default true)",
    )
    d.add_argument(
        "--validate",
        type=boolean,
        default=True,
        metavar="true|false",
        help="verify size and MD5 (default true)",
    )
    d.add_argument(
        "--verify-connection", type=boolean, default=True, metavar="true|false", help=VERIFY_HELP
    )
    d.add_argument("--offset", type=int, default=0, help="first byte (default 0)")
    d.add_argument("--length", type=int, default=-1, help="bytes (default: to the end)")
    d.add_argument("--force", action="store_true", help="fetch again even if present")
    d.add_argument("--parallel", type=int, help=PARALLEL_HELP)
    d.add_argument("--json", action="store_true", help=JSON_HELP)

    v = sub.add_parser(
        "view",
        help=COMMANDS["view"],
        epilog=EPILOG,
        formatter_class=RawFormatter,
    )
    v.add_argument(
        "--object-id",
        nargs="+",
        action="extend",
        type=object_id,
        metavar="ID",
        help="one or more objects (several are sliced side by side)",
    )
    v.add_argument("--input-file", type=Path, help="a local BAM/CRAM/VCF instead")
    v.add_argument("--input-file-index", type=Path, help="its index, if not beside it")
    v.add_argument("--manifest", help="slice every alignment/variant file of a manifest")
    v.add_argument(
        "--query",
        nargs="+",
        action="extend",
        default=[],
        metavar="REGION",
        help="contig, contig:start or contig:start-end (1-based, inclusive); "
        "'*' for unplaced unmapped reads",
    )
    v.add_argument("--bed-query", type=Path, help="regions from a BED file (overrides --query)")
    v.add_argument("--header-only", action="store_true", help="only the header, no records")
    v.add_argument(
        "--contained", action="store_true", help="only records entirely inside the region"
    )
    v.add_argument(
        "--output-original-header",
        action="store_true",
        help="accepted for compatibility: the original header is always kept",
    )
    v.add_argument(
        "--output-format",
        default="SAM",
        type=str.upper,
        help="SAM (default), BAM or CRAM; VCF or BCF for variant files",
    )
    v.add_argument(
        "--output-type",
        default="TRIMMED",
        type=str.upper,
        choices=("TRIMMED",),
        help="only TRIMMED, as in the original",
    )
    v.add_argument("--output-dir", type=Path, help="write files here instead of stdout")
    v.add_argument("--output-index", action="store_true", help="index written BAM/CRAM/VCF")
    v.add_argument("--stdout", action="store_true", help="write to stdout (the default)")
    v.add_argument("--reference-file", type=Path, help="FASTA for CRAM")
    v.add_argument(
        "--verify-connection", type=boolean, default=True, metavar="true|false", help=VERIFY_HELP
    )

    up = sub.add_parser(
        "upload",
        help=COMMANDS["upload"],
        epilog=EPILOG,
        formatter_class=RawFormatter,
    )
    up.add_argument(
        "--manifest",
        type=Path,
        help="Song upload manifest: a first line, then objectId<TAB>path<TAB>md5 per file",
    )
    up.add_argument("--object-id", type=object_id, help="one object (with --file and --md5)")
    up.add_argument("--file", type=Path, help="the file of --object-id")
    up.add_argument("--md5", help="the MD5 the analysis declares for --file")
    up.add_argument(
        "--force", action="store_true", help="replace an object of an unpublished analysis"
    )
    up.add_argument("--parallel", type=int, help=PARALLEL_HELP)
    up.add_argument(
        "--verify-connection", type=boolean, default=True, metavar="true|false", help=VERIFY_HELP
    )
    up.add_argument("--json", action="store_true", help=JSON_HELP)

    sb = sub.add_parser(
        "submit",
        help=COMMANDS["submit"],
        epilog=EPILOG,
        formatter_class=RawFormatter,
    )
    sb.add_argument("--study-id", required=True, help="the study the analysis belongs to")
    sb.add_argument("--payload", required=True, type=Path, help="Song analysis payload (JSON)")
    sb.add_argument("--dir", required=True, type=Path, help="where the payload's files are")
    sb.add_argument(
        "--publish", action="store_true", help="publish the analysis once its files are in"
    )
    sb.add_argument("--parallel", type=int, help=PARALLEL_HELP)
    sb.add_argument("--json", action="store_true", help=JSON_HELP)

    mt = sub.add_parser(
        "mount",
        help=COMMANDS["mount"],
        epilog=EPILOG,
        formatter_class=RawFormatter,
    )
    mt.add_argument("--mount-point", required=True, type=Path, help="an empty directory of yours")
    mt.add_argument("--manifest", help="mount only these files (and their index files)")
    mt.add_argument(
        "--layout",
        default="bundle",
        choices=("bundle", "object-id"),
        help="bundle: /<analysis id>/<file name> (default); object-id: /<object id>",
    )
    mt.add_argument(
        "--cache-metadata",
        action="store_true",
        help="list the repository once and keep it for the whole session",
    )
    mt.add_argument(
        "--daemonize",
        action="store_true",
        help="return once mounted, leaving the mount running in the background",
    )
    mt.add_argument("--options", help="extra FUSE options, e.g. allow_other,debug")
    mt.add_argument(
        "--cache-size",
        type=int,
        default=128,
        help="memory cache in MiB (the kernel's page cache keeps what was read; default 128)",
    )
    mt.add_argument("--disk-cache", type=Path, help="also cache blocks on disk here")
    mt.add_argument("--disk-cache-size", type=int, default=10240, help="disk cache in MiB")
    mt.add_argument(
        "--verify-connection", type=boolean, default=True, metavar="true|false", help=VERIFY_HELP
    )

    u = sub.add_parser("url", help=COMMANDS["url"])
    u.add_argument("--object-id", required=True, type=object_id, help="the object")
    u.add_argument(
        "--verify-connection", type=boolean, default=True, metavar="true|false", help=VERIFY_HELP
    )

    m = sub.add_parser("manifest", help=COMMANDS["manifest"])
    m.add_argument("--manifest", required=True, help="File Repository manifest TSV: path or URL")

    i = sub.add_parser("info", help=COMMANDS["info"])
    i.add_argument(
        "--verbose", action="store_true", help="accepted for compatibility: info always says all"
    )
    sub.add_parser("version", help=COMMANDS["version"])
    h = sub.add_parser("help", help=COMMANDS["help"])
    h.add_argument("name", nargs="?", help="a command's name")
    return p


# -- commands ------------------------------------------------------------------------------
def read_manifest(source: str | None):
    """A manifest's rows (None without one); see api.read_manifest_text."""
    if not source:
        return None
    from pyscore.client.api import read_manifest_text

    text = read_manifest_text(source)
    from pyscore.wire.manifest import parse_download

    return parse_download(text, source)


def started(call: Callable[[], object]) -> Callable[[], None]:
    """`call` begun now in a thread of its own (a command's first request leaves while the
    rest of the command is imported); the function returned waits for it and raises its
    error."""
    import threading

    failed: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to whoever waits
            failed.append(exc)

    thread = threading.Thread(target=run, name="first-request", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]

    return wait


def cmd_download(args: argparse.Namespace) -> int:
    from pyscore.client.api import Api
    from pyscore.client.layout import check_sources, writable_dir

    check_sources(args.object_id, args.manifest, args.analysis_id, args.study_id)
    if args.offset < 0 or args.length < -1 or args.length == 0:
        raise UsageError("--offset must be >= 0 and --length positive (or -1 for the rest)")
    writable_dir(args.output_dir)
    settings = resolve(
        {"transport.parallel": str(args.parallel) if args.parallel else None}, args.profile
    )
    api = Api(settings)
    ping = started(api.ping) if args.verify_connection else None
    from pyscore.client.download import Request, download, wanted_ids
    from pyscore.client.progress import reporter

    report = reporter(args.json, args.quiet, args.silent)
    try:
        ids, rows = wanted_ids(
            api, args.object_id, read_manifest(args.manifest), args.analysis_id, args.study_id
        )
        request = Request(
            ids,
            args.output_dir,
            args.output_layout,
            args.index,
            args.validate,
            args.offset,
            args.length,
            args.force,
            rows,
        )
        outcome = download(api, request, report, settings.parallel, ping)
    finally:
        report.close()
        api.close()
    report.notice(
        ("Done: " if not outcome.failures else "Finished with errors: ")
        + report.summary(len(outcome.failures))
    )
    return outcome.exit_code


def cmd_view(args: argparse.Namespace) -> int:
    import signal

    from pyscore.client.layout import writable_dir

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends us quietly, as samtools
    if not (args.input_file or args.object_id or args.manifest):
        raise UsageError("Give one of --object-id, --input-file or --manifest")
    if args.input_file_index and not args.input_file:
        raise UsageError("--input-file-index needs --input-file")
    if args.manifest and not args.output_dir:
        raise UsageError("--manifest needs --output-dir")
    if args.output_dir:
        writable_dir(args.output_dir)
    api, pinged = None, None
    if not args.input_file:  # the first request leaves before the slicing machinery loads
        from pyscore.client.api import Api

        api = Api(resolve(None, args.profile))
        pinged = started(api.ping) if args.verify_connection else None
    from pyscore.client import view

    regions = (
        view.parse_bed(args.bed_query)
        if args.bed_query
        else [view.parse_region(q) for q in args.query]
    )
    job = view.Job(
        regions=regions,
        output_format=args.output_format,
        header_only=args.header_only,
        contained=args.contained,
        output_dir=args.output_dir,
        output_index=args.output_index,
        reference=str(args.reference_file) if args.reference_file else None,
        bed=args.bed_query,
    )
    if args.input_file or api is None:
        return leaving(view.run_local(job, args.input_file, args.input_file_index))
    rows = None
    if args.object_id:
        ids = list(args.object_id)
    else:
        rows = read_manifest(args.manifest)
        ids = [r.objectId for r in rows]
    return leaving(
        view.run_remote(
            job,
            api,
            ids,
            pinged,
            from_manifest=bool(args.manifest) and not args.object_id,
            rows=rows,
        )
    )


def leaving(code: int) -> int:
    """The command is done (its files closed, its output flushed): freeze the objects, so
    the interpreter's exit does not walk and free them one by one (with pysam loaded, 20-40
    ms of a `view` that takes a few hundred); the operating system takes the memory back."""
    import gc

    gc.freeze()
    return code


def _uploader(args: argparse.Namespace):
    from pyscore.client.api import Api
    from pyscore.client.progress import reporter
    from pyscore.client.upload import Uploader

    settings = resolve(
        {"transport.parallel": str(args.parallel) if args.parallel else None}, args.profile
    )
    api = Api(settings)
    report = reporter(args.json, args.quiet, args.silent)
    return api, report, Uploader(api, report, settings.parallel)


def cmd_upload(args: argparse.Namespace) -> int:
    from pyscore.client.upload import items_for, upload_items

    items = items_for(args.manifest, args.object_id, args.file, args.md5)
    api, report, uploader = _uploader(args)
    try:
        failures = upload_items(api, uploader, items, args.force, args.verify_connection)
    finally:
        uploader.close()
        report.close()
        api.close()
    report.notice(f"Uploaded {len(items) - len(failures)} of {len(items)} file(s)")
    return 1 if failures else EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from pyscore.client.submit import submit

    api, report, uploader = _uploader(args)
    try:
        analysis_id = submit(
            api, uploader, report, args.study_id, args.payload, args.dir, args.publish
        )
    finally:
        uploader.close()
        report.close()
        api.close()
    print(analysis_id)
    return EXIT_OK


def cmd_mount(args: argparse.Namespace) -> int:
    from pyscore.client import mount
    from pyscore.client.api import Api
    from pyscore.client.layout import writable_dir
    from pyscore.client.progress import reporter

    report = reporter(False, args.quiet, args.silent)
    mount.check_mount_point(args.mount_point)
    if args.disk_cache:
        writable_dir(args.disk_cache, "--disk-cache")
    if args.daemonize:
        log = mount.daemonize(sys.argv[1:], args.mount_point)
        report.notice(
            f"Mounted at {args.mount_point} (background; log {log}); unmount with "
            f"'fusermount3 -u {args.mount_point}'"
        )
        return EXIT_OK
    api = Api(resolve(None, args.profile))
    wanted = None
    if args.manifest:
        wanted = {r.objectId for r in read_manifest(args.manifest)}
    try:
        if args.verify_connection:
            api.ping()
        mount.mount(
            api,
            args.mount_point,
            args.layout,
            wanted,
            args.cache_metadata,
            mount.parse_options(args.options),
            args.cache_size * 1024 * 1024,
            args.disk_cache,
            args.disk_cache_size * 1024 * 1024,
            report.warn,
            report.notice,
        )
    finally:
        api.close()
    return EXIT_OK


def cmd_url(args: argparse.Namespace) -> int:
    from pyscore.client.api import Api

    api = Api(resolve(None, args.profile))
    try:
        if args.verify_connection:
            api.ping()
        url = api.signed_url(args.object_id)
    finally:
        api.close()
    print(url)
    return EXIT_OK


def cmd_manifest(args: argparse.Namespace) -> int:
    rows = read_manifest(args.manifest)
    from pyscore.wire import tsv

    header = ("object_id", "file_name", "file_size", "md5sum", "analysis_id", "index_object_id")
    print(tsv.row(header))
    for r in rows:
        print(
            tsv.row(
                (r.objectId, r.fileName, r.fileSize, r.fileMd5sum, r.analysisId, r.indexObjectId)
            )
        )
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    settings = resolve(None, args.profile)
    print(f"score-client (pyscore) {__version__}")
    print(f"Active profile: {settings.profile}")
    width = max(len(k) for k, _, _ in settings.shown())
    for key, value, source in settings.shown():
        print(f"  {key:<{width}}  {value or '(empty)'}  [{source}]")
    if not settings.token:
        print("Note: no access token set; only open-access files can be downloaded")
    return EXIT_OK


def cmd_version(_: argparse.Namespace) -> int:
    print(f"Version: {__version__}")
    print("Implementation: pyscore (Python, no Java)")
    return EXIT_OK


HANDLERS = {
    "download": cmd_download,
    "view": cmd_view,
    "upload": cmd_upload,
    "submit": cmd_submit,
    "mount": cmd_mount,
    "url": cmd_url,
    "manifest": cmd_manifest,
    "info": cmd_info,
    "version": cmd_version,
}


def interrupted() -> NoReturn:
    """Ctrl-C: the transfer's state is saved by now (the engines sync it on their way out);
    say so and end at once. Threads still blocked in a read (a stalled server, a read
    timeout of a minute) are not waited for, and nothing they would say is printed."""
    print("score-client: interrupted; re-run the same command to resume", file=sys.stderr)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version or args.command == "version":
        return cmd_version(args)
    if args.command in (None, "help"):
        name = getattr(args, "name", None)
        if name:
            if name not in COMMANDS:
                parser.error(f"unknown command {name!r}")
            parser.parse_args([name, "--help"])
        parser.print_help()
        return EXIT_OK if args.command == "help" else EXIT_USAGE
    try:
        return HANDLERS[args.command](args)
    except ScoreError as exc:
        print(f"score-client: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        interrupted()
    except BrokenPipeError:
        return 1
    except OSError as exc:  # the local file system said no: name the file and the reason
        where = f": {exc.filename}" if exc.filename else ""
        print(f"score-client: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        manifests = sys.modules.get("pyscore.wire.manifest")  # loaded if a manifest was read
        if manifests is not None and isinstance(exc, manifests.ManifestError):
            print(f"score-client: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if os.environ.get("PYSCORE_DEBUG"):
            raise
        print(
            f"score-client: internal error: {type(exc).__name__}: {exc} (set PYSCORE_DEBUG=1 "
            "for details, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
