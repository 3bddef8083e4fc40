"""`pyscore.Client`: score-client's engine as a library, for notebooks and workflow code.

Nothing here moves bytes or retries of its own: downloads run download.py's pipeline
(batched lookups, resumable verified parts), `open` reads through blockcache.py, regions go
through view/ (the server's htsget, or a signed URL with its index), uploads through
upload.py. Failures raise the CLI's typed errors (client/errors.py), with its messages.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union
from urllib.parse import quote

from pyscore.client.config import ClientSettings, resolve
from pyscore.client.errors import NotFoundError, ScoreError, UsageError
from pyscore.library.records import AnalysisInfo, FileInfo, Records, analysis_from

if TYPE_CHECKING:
    import pysam

    from pyscore.client.api import Api
    from pyscore.client.blockcache import BlockStore, RemoteObject
    from pyscore.client.progress import Reporter
    from pyscore.library.reader import ObjectFile
    from pyscore.wire.song import Entity

log = logging.getLogger("pyscore")
PathLike = Union[str, Path]
CACHE_BYTES = 256 * 1024 * 1024  # the block cache of `open` (memory)


def checked_id(value: str) -> str:
    """An object id as the services spell it, or the one-line refusal."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise UsageError(f"{value!r} is not an object id (a UUID)") from None


def segment(value: str, what: str) -> str:
    """A study or analysis id as one URL path segment: '..' or a '/' could reach another
    endpoint of the service than the one meant."""
    text = str(value)
    if not text or text in (".", "..") or any(c in text for c in "/\\?#") or not text.isprintable():
        raise UsageError(f"{what} {text!r} is not an id (no '/', '..' or control characters)")
    return quote(text, safe="")


class _LogReporter:
    """Messages of the engine to the `pyscore` logger instead of stderr."""

    @staticmethod
    def make(progress: bool) -> Reporter:
        from pyscore.client.progress import Reporter, reporter

        if progress:
            return reporter(False, False, False)

        class Logged(Reporter):
            def _line(self, message: str) -> None:
                log.info(message)

            def error(self, message: str) -> None:
                log.warning(message)

        return Logged()


class Client:
    """A connection to a Song/Score platform (pyscore's, or the original's), configured as
    score-client is: arguments here, else the environment (ACCESSTOKEN, METADATA_URL,
    STORAGE_URL, STORAGE_PROFILE, ...), else `application[-<profile>].properties`.

    ```python
    import pyscore
    client = pyscore.Client()                       # settings as score-client's
    files = client.files(study="DEMO")              # metadata: records (.to_frame())
    paths = client.download(files[0].object_id, output_dir="data")
    with client.open(files[0].object_id) as f:      # seekable, read-only
        head = f.read(1024)
    ```

    Errors are pyscore's typed exceptions (`pyscore.AuthError`, `pyscore.NotFoundError`,
    ...: the classes of score-client's exit codes), each with the server's reason."""

    def __init__(
        self,
        profile: Optional[str] = None,
        *,
        token: Optional[str] = None,
        metadata_url: Optional[str] = None,
        storage_url: Optional[str] = None,
        parallel: Optional[int] = None,
        progress: bool = False,
    ) -> None:
        """`profile`: conf/application-<profile>.properties; the others override one setting
        each. `progress`: bars (or lines) on stderr for transfers, as score-client shows."""
        self._args: dict[str, Any] = {
            "profile": profile,
            "token": token,
            "metadata_url": metadata_url,
            "storage_url": storage_url,
            "parallel": parallel,
            "progress": progress,
        }
        flags = {
            "accessToken": token,
            "metadata.url": metadata_url,
            "storage.url": storage_url,
            "transport.parallel": str(parallel) if parallel else None,
        }
        self.settings: ClientSettings = resolve(flags, profile)
        self._progress = progress
        self._lock = threading.Lock()
        self._api: Optional[Api] = None
        self._blocks: Optional[BlockStore] = None
        self._objects: dict[str, RemoteObject] = {}
        self._analyses: dict[tuple[str, str], AnalysisInfo] = {}
        self._htsget: Optional[bool] = None

    # -- the object itself ----------------------------------------------------------------
    def __repr__(self) -> str:
        token = "set" if self.settings.token else "not set"
        return (
            f"Client(profile={self.settings.profile!r}, metadata_url="
            f"{self.settings.metadata_url!r}, storage_url={self.settings.storage_url!r}, "
            f"token {token})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its arguments (a dask worker makes its own connections)."""
        return (_rebuild, (self._args,))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close connections and stop the block cache's fetchers."""
        with self._lock:
            api, blocks = self._api, self._blocks
            self._api = self._blocks = None
        if blocks is not None:
            blocks.close()
        if api is not None:
            api.close()

    @property
    def api(self) -> Api:
        """The JSON API calls (made on first use: importing pyscore loads no HTTP client)."""
        with self._lock:
            if self._api is None:
                from pyscore.client.api import Api

                self._api = Api(self.settings)
            return self._api

    # -- metadata -------------------------------------------------------------------------
    def studies(self) -> list[str]:
        """The ids of the platform's studies."""
        body = self.api.request(
            "GET", f"{self.settings.metadata_url}/studies/all", "study listing"
        ).json()
        if not isinstance(body, list):
            raise ScoreError("study listing: the answer is not a list")
        return [str(s) for s in body]

    def analyses(self, study: str, state: str = "PUBLISHED") -> Records[AnalysisInfo]:
        """A study's analyses in a state (PUBLISHED, UNPUBLISHED, SUPPRESSED, or several
        joined by commas), each with its files."""
        from pyscore.client.api import LISTING_LIMIT

        what = f"analyses of study {study}"
        body = self.api.request(
            "GET",
            f"{self.settings.metadata_url}/studies/{segment(study, 'study')}/analysis",
            what,
            params={"analysisStates": state},
            limit=LISTING_LIMIT,
        ).json()
        if not isinstance(body, list):
            raise ScoreError(f"{what}: the answer is not a list")
        found = Records(analysis_from(a, what) for a in body)
        with self._lock:
            for a in found:
                self._analyses[(a.study, a.analysis_id)] = a
        return found

    def analysis(self, study: str, analysis_id: str) -> AnalysisInfo:
        """One analysis of a study, with its files (asked once per client)."""
        key = (study, analysis_id)
        with self._lock:
            known = self._analyses.get(key)
        if known is not None:
            return known
        what = f"analysis {analysis_id}"
        url = (
            f"{self.settings.metadata_url}/studies/{segment(study, 'study')}/analysis/"
            f"{segment(analysis_id, 'analysis id')}"
        )
        found = analysis_from(self.api.request("GET", url, what).json(), what)
        with self._lock:
            self._analyses[key] = found
        return found

    def files(
        self, study: Optional[str] = None, analysis: Optional[str] = None
    ) -> Records[FileInfo]:
        """Files with object id, name, size, MD5, index object id, study, analysis and
        access: of one analysis, or of a study's published analyses, or (no study) of every
        study's."""
        if analysis is not None:
            if study is None:
                raise UsageError("files(analysis=...) needs its study too")
            return Records(self.analysis(study, analysis).files)
        studies = [study] if study is not None else self.studies()
        return Records(f for s in studies for a in self.analyses(s) for f in a.files)

    def file(self, object_id: str) -> FileInfo:
        """One file by object id (its analysis asked once, then remembered)."""
        oid = checked_id(object_id)
        entity = self.api.entity(oid)
        for f in self.analysis(entity.projectCode, entity.gnosId).files:
            if f.object_id == oid:
                return f
        error = NotFoundError(f"object {oid}: its analysis {entity.gnosId} does not list it")
        error.status = 404
        raise error

    # -- transfers ------------------------------------------------------------------------
    def download(
        self,
        object_ids: Union[str, Iterable[str], None] = None,
        *,
        manifest: Optional[PathLike] = None,
        analysis: Optional[str] = None,
        study: Optional[str] = None,
        output_dir: PathLike = ".",
        layout: str = "filename",
        index: bool = True,
        validate: bool = True,
        force: bool = False,
    ) -> list[Path]:
        """Download objects (by id, a File Repository manifest's path or URL, or every file
        of an analysis with its study) into `output_dir`, as `score-client download` does:
        resumed where an earlier run stopped, size and MD5 checked, index files beside
        their data (`index`), files already complete skipped (`force` fetches again).
        `layout`: "filename", "bundle" (<analysis>/<name>) or "id". Returns the paths,
        data files first with each one's index after it. Any failure raises the first one's
        typed error (naming how many more failed) after the others are done."""
        from pyscore.client.download import Request, wanted_ids
        from pyscore.client.download import download as run
        from pyscore.client.layout import LAYOUTS, check_sources, writable_dir

        ids = [object_ids] if isinstance(object_ids, str) else object_ids
        ids = [checked_id(i) for i in ids] if ids is not None else None
        check_sources(ids, manifest, analysis, study)
        if layout not in LAYOUTS:
            raise UsageError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
        out = Path(output_dir)
        writable_dir(out, "output_dir")
        rows = None
        if manifest is not None:
            from pyscore.client.api import read_manifest_text
            from pyscore.wire.manifest import parse_download

            rows = parse_download(read_manifest_text(str(manifest)), str(manifest))
        api = self.api
        wanted, rows = wanted_ids(api, ids, rows, analysis, study)
        request = Request(wanted, out, layout, index, validate, 0, -1, force, rows)
        report = _LogReporter.make(self._progress)
        try:
            outcome = run(api, request, report, self.settings.parallel)
        finally:
            report.close()
        if outcome.failures:
            raise first_of(outcome.failures)
        return list(outcome.paths.values())

    def open(self, object_id: str) -> ObjectFile:
        """A remote object as a seekable read-only binary file (use it in `with`). Reads go
        through a block cache with read-ahead; signed URLs are renewed as they expire."""
        from pyscore.library.reader import ObjectFile

        obj = self.remote(object_id)
        return ObjectFile(self.blocks, obj, obj.object_id)

    @property
    def blocks(self) -> BlockStore:
        """The block cache `open` and the score:// file system read through."""
        api = self.api
        with self._lock:
            if self._blocks is None:
                from pyscore.client.blockcache import block_store

                self._blocks = block_store(api, CACHE_BYTES)
            return self._blocks

    def remote(self, object_id: str) -> RemoteObject:
        """An object's size and signed URL (asked once; renewed by the cache as it ages)."""
        from pyscore.client.blockcache import RemoteObject

        oid = checked_id(object_id)
        with self._lock:
            known = self._objects.get(oid)
        if known is not None:
            return known
        spec = self.api.download_spec(oid, external=True)
        obj = RemoteObject(oid, spec.objectSize, spec.parts[0].url or "")
        with self._lock:
            return self._objects.setdefault(oid, obj)

    def upload(
        self,
        object_id: Optional[str] = None,
        file: Optional[PathLike] = None,
        md5: Optional[str] = None,
        *,
        manifest: Optional[PathLike] = None,
        force: bool = False,
    ) -> None:
        """Upload one object (its file and the MD5 its analysis declares) or a Song upload
        manifest's files, as `score-client upload`: parts checked, resumable."""
        from pyscore.client.upload import items_for, upload_items

        items = items_for(
            Path(manifest) if manifest is not None else None,
            checked_id(object_id) if object_id else None,
            Path(file) if file is not None else None,
            md5,
        )
        with self._uploader() as uploader:
            failures = upload_items(self.api, uploader, items, force, verify=False)
        if failures:
            raise first_of(failures)

    def submit(
        self, study: str, payload: PathLike, directory: PathLike, publish: bool = False
    ) -> str:
        """Submit a Song payload, upload its files from `directory`, publish if asked, as
        `score-client submit`; re-running finishes an interrupted one. Returns the analysis
        id."""
        from pyscore.client.submit import submit

        with self._uploader() as uploader:
            report, folder = uploader.reporter, Path(directory)
            return submit(self.api, uploader, report, study, Path(payload), folder, publish)

    def _uploader(self) -> Any:
        from contextlib import contextmanager

        from pyscore.client.upload import Uploader

        @contextmanager
        def made() -> Iterator[Uploader]:
            report = _LogReporter.make(self._progress)
            uploader = Uploader(self.api, report, self.settings.parallel)
            try:
                yield uploader
            finally:
                uploader.close()
                report.close()

        return made()

    # -- for other tools ------------------------------------------------------------------
    def url(self, object_id: str) -> str:
        """A signed URL of the whole object, for tools that fetch it themselves (it expires:
        ask again rather than keep it)."""
        return self.api.signed_url(checked_id(object_id))

    def drs(self, object_id: str) -> str:
        """The object's GA4GH DRS URI (drs://host/id), from the server's DRS service."""
        oid = checked_id(object_id)
        body = self.api.request(
            "GET",
            f"{self.settings.storage_url}/ga4gh/drs/v1/objects/{oid}",
            f"DRS object {oid}",
        ).json()
        uri = body.get("self_uri") if isinstance(body, dict) else None
        if not isinstance(uri, str):
            raise ScoreError(f"DRS object {oid}: the answer has no self_uri")
        return uri

    # -- regions --------------------------------------------------------------------------
    def alignments(
        self, object_id: str, region: Optional[str] = None, *, reference: Optional[PathLike] = None
    ) -> Iterator[pysam.AlignedSegment]:
        """The reads of a BAM/CRAM overlapping a region ("chr1", "chr1:100-200", 1-based
        inclusive; "*" for unplaced unmapped reads; None: all), as pysam records. Through
        the server's htsget where it has one, else a signed URL with its index. A CRAM needs
        its `reference` FASTA."""
        return self._records(object_id, "reads", region, reference)

    def variants(
        self, object_id: str, region: Optional[str] = None
    ) -> Iterator[pysam.VariantRecord]:
        """The records of a VCF/BCF overlapping a region, as pysam records (see
        `alignments`)."""
        return self._records(object_id, "variants", region, None)

    def _records(
        self, object_id: str, kind: str, region: Optional[str], reference: Optional[PathLike]
    ) -> Iterator[Any]:
        from pyscore.client.view import kind_of, parse_region
        from pyscore.client.view.htsget import USUAL_FORMAT, Tickets, unchecked
        from pyscore.client.view.run import remote_source
        from pyscore.client.view.slicing import records

        regions = [parse_region(region)] if region else []
        oid = checked_id(object_id)
        folder = tempfile.TemporaryDirectory(prefix="pyscore-region-")
        early = None
        if self._htsget:  # its usual format's ticket goes out beside the file's lookup
            early = Tickets(self.api, oid, kind, USUAL_FORMAT[kind], Path(folder.name))
            early.ask_early(*unchecked(regions[0] if regions else None))

        def done() -> None:
            if early is not None:
                early.settle()  # a ticket not used (the file's format is another)
            folder.cleanup()

        try:
            entity, htsget = self._lookup(oid)
            if kind_of(entity.fileName) != kind:
                other = "variants" if kind == "reads" else "alignments"
                raise UsageError(f"{entity.fileName} holds {other}: use Client.{other}()")
            source = remote_source(
                self.api, entity, Path(folder.name), htsget, bool(regions), early=early
            )
            found = records(source, regions, str(Path(reference).resolve()) if reference else None)
            first = next(found, None)  # opening and the first region: their errors now
        except BaseException:
            done()
            raise

        def rest() -> Iterator[Any]:
            try:
                if first is not None:
                    yield first
                    yield from found
            finally:
                done()

        return rest()

    def _lookup(self, object_id: str) -> tuple[Entity, bool]:
        """A file's entity, and whether the server speaks htsget: on a client's first call
        that probe, and htslib's loading, go beside the lookup."""
        if self._htsget is not None:
            return self.api.entity(object_id), self._htsget
        import importlib
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2, "region-start") as pool:
            probe = pool.submit(self._speaks_htsget)
            pool.submit(importlib.import_module, "pysam")  # its failure: told where it is used
            return self.api.entity(object_id), probe.result()

    def _speaks_htsget(self) -> bool:
        if self._htsget is None:
            from pyscore.client.view.htsget import speaks_htsget

            on = self.settings.get("view.htsget") != "false"
            self._htsget = on and speaks_htsget(self.api)
        return self._htsget


def first_of(failures: dict[str, ScoreError]) -> ScoreError:
    """The first failure, naming how many more there were (its class and status kept)."""
    first = next(iter(failures.values()))
    if len(failures) == 1:
        return first
    error = type(first)(f"{first} (and {len(failures) - 1} more failed)")
    error.status = first.status
    return error


def _rebuild(args: dict[str, Any]) -> Client:
    return Client(**args)
