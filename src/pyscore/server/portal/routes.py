"""The File Repository web page: server-rendered, filters in the URL, manifest export.

No object bytes pass through these pages: downloads are redirects to signed storage URLs.
Signing in stores the token in an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from pyscore.server import audit, metadata, objects, repository
from pyscore.server import viewer as viewing
from pyscore.server.auth import Action, Principal, can, principal_for
from pyscore.server.errors import ApiError
from pyscore.server.objects import Signer
from pyscore.server.tables import Analysis, RepositoryEntry
from pyscore.server.web import edge
from pyscore.server.web.deps import (
    SIGN_IN_COOKIE,
    PlatformDep,
    SessionDep,
    SignerDep,
    base_url,
)
from pyscore.wire import tsv
from pyscore.wire.files import human_size as human
from pyscore.wire.manifest import ARGO_COLUMNS

HERE = Path(__file__).parent
COOKIE = SIGN_IN_COOKIE
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=HERE / "static")

FACET_LABELS = [
    ("study", "Study"),
    ("data_type", "Data type"),
    ("file_type", "File type"),
    ("access", "Access"),
    ("analysis_type", "Analysis type"),
    ("donor", "Donor"),
]
# What a researcher scans first comes first; the long ids last (shortened to fit, whole in
# their title).
COLUMNS = [
    ("file_name", "File name"),
    ("file_type", "File type"),
    ("size", "Size"),
    ("access", "Access"),
    ("study", "Study"),
    ("donor", "Donor"),
    ("sample", "Sample"),
    ("data_type", "Data type"),
    ("analysis_type", "Analysis"),
    ("object_id", "Object id"),
]
SORTABLE = {
    "file_name",
    "object_id",
    "study",
    "data_type",
    "file_type",
    "size",
    "access",
    "analysis_type",
}
TABLE_FIELDS = (
    "file_name",
    "object_id",
    "study_id",
    "donors",
    "samples",
    "data_type",
    "file_type",
    "size",
    "md5",
    "access",
    "analysis_id",
    "analysis_type",
    "index_object_id",
)


def viewer(request: Request, session: Session) -> Principal | None:
    """Who is looking: a bearer header, else the sign-in cookie; a bad cookie is ignored."""
    header = request.headers.get("authorization")
    external = request.app.state.platform.identity.resolve
    if header:
        return principal_for(session, header, external)
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return principal_for(session, f"Bearer {token}", external)
    except ApiError:
        return None


def read_filters(request: Request) -> repository.Filters:
    params = request.query_params
    selected = {facet: [v for v in params.getlist(facet) if v] for facet in repository.FACETS}
    sort = params.get("sort", "file_name")
    return repository.Filters(
        {k: v for k, v in selected.items() if v},
        params.get("q", "")[:200],
        sort if sort in repository.SORTS else "file_name",
        "desc" if params.get("order") == "desc" else "asc",
    )


def query_items(filters: repository.Filters, **extra: object) -> list[tuple[str, str]]:
    items = [(facet, v) for facet, values in filters.selected.items() for v in values]
    if filters.q:
        items.append(("q", filters.q))
    items += [("sort", filters.sort), ("order", filters.order)]
    items += [(k, str(v)) for k, v in extra.items() if v is not None]
    return items


def here(request: Request) -> str:
    """This page's address without a one-off notice, for coming back after sign-in/out."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "message"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


def _with_message(target: str, message: str) -> str:
    return target + ("&" if "?" in target else "?") + urlencode({"message": message})


def _int(text: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(text or default)))
    except ValueError:
        return default


# A refusal on a page, as a browser visitor reads it: a heading and what to do next
PAGE_ERRORS = {
    400: ("Not available", "Only files of published analyses are shown."),
    401: ("Sign in to get this file", "Sign in above with an access token that may read it."),
    403: ("Not allowed", "Sign in with a token holding the scope named above."),
    404: ("No such file", "Check the link, or find the file in the File Repository."),
}


def wants_html(request: Request) -> bool:
    """A browser asks for a page (Accept: text/html, ...); API clients and curl (*/*) are
    answered in JSON, as on every other route."""
    return "text/html" in request.headers.get("accept", "")


def html_errors(route: Callable[..., Response]) -> Callable[..., Response]:
    """A page route's refusals as an HTML page with the same status, for browsers."""

    @functools.wraps(route)
    def answer(*args: object, **kwargs: object) -> Response:
        try:
            return route(*args, **kwargs)
        except ApiError as exc:
            request, s = kwargs["request"], kwargs["s"]
            assert isinstance(request, Request) and isinstance(s, Session)
            if not wants_html(request):
                raise
            try:
                who = viewer(request, s)
            except ApiError:  # a bad bearer header: the page shows a visitor not signed in
                who = None
            heading, hint = PAGE_ERRORS.get(exc.status, ("Not available", ""))
            return templates.TemplateResponse(
                request,
                "error.html",
                {
                    "who": who,
                    "heading": heading,
                    "reason": exc.message,
                    "hint": hint,
                    "message": None,
                    "here": here(request),
                },
                status_code=exc.status,
                headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
            )

    return answer


@router.get("/", response_class=RedirectResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/repository", status_code=307)


@router.get("/repository", response_class=HTMLResponse)
def repository_page(request: Request, s: SessionDep) -> HTMLResponse:
    started = time.perf_counter()
    who = viewer(request, s)
    filters = read_filters(request).resolve(s)
    size = _int(request.query_params.get("size"), 50, 1, 250)
    page = _int(request.query_params.get("page"), 1, 1, 10**9)
    total, total_bytes = repository.totals(s, filters)
    pages = max(1, -(-total // size))
    page = min(page, pages)  # an old link past the end shows the last page
    rows, _ = repository.search(s, filters, (page - 1) * size, size, total)
    items = query_items(filters, size=size)

    def sort_link(key: str) -> str:
        order = "desc" if filters.sort == key and filters.order == "asc" else "asc"
        rest = [(k, v) for k, v in items if k not in ("sort", "order")]
        return "/repository?" + urlencode([*rest, ("sort", key), ("order", order)])

    def page_link(n: int) -> str:
        return "/repository?" + urlencode([*items, ("page", n)])

    def may(e: RepositoryEntry) -> bool:
        return can(who, Action.READ, e.study_id, e.access)

    response = templates.TemplateResponse(
        request,
        "repository.html",
        {
            "who": who,
            "filters": filters,
            "facets": repository.facet_counts(s, filters),
            "facet_labels": FACET_LABELS,
            "facet_limit": 25,
            "rows": rows,
            "total": total,
            "total_size": human(total_bytes),
            "size": size,
            "page": page,
            "here": here(request),
            "pages": pages,
            "columns": COLUMNS,
            "sortable": SORTABLE,
            "sort_link": sort_link,
            "page_link": page_link,
            "query": urlencode(query_items(filters)),
            "query_items": items,
            "human": human,
            "may": may,
            "message": request.query_params.get("message"),
        },
    )
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _attachment(chunks: Iterator[str], name: str, media: str) -> StreamingResponse:
    """A download streamed as it is read from the database (its memory: a batch of rows)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return StreamingResponse(
        (chunk.encode() for chunk in chunks),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name.format(stamp=stamp)}"'},
    )


def _lines(batches: Iterator[Sequence[Any]], line: Callable[[Any], str]) -> Iterator[str]:
    for batch in batches:
        yield "".join([line(e) + "\n" for e in batch])


TABLE_COLUMNS = [getattr(RepositoryEntry, f) for f in TABLE_FIELDS]


@router.get("/repository/manifest.tsv")
def manifest(request: Request, p: PlatformDep) -> Response:
    code = p.settings.extra.get("repository_code", "PYSCORE")
    batches = repository.stream(p.db, read_filters(request), repository.MANIFEST)

    def body() -> Iterator[str]:
        yield tsv.row(ARGO_COLUMNS) + "\n"
        yield from _lines(batches, lambda r: tsv.row((code, *r)))

    return _attachment(body(), "score-manifest.{stamp}.tsv", "text/tab-separated-values")


@router.get("/repository/table.tsv")
def table(request: Request, p: PlatformDep) -> Response:
    batches = repository.stream(p.db, read_filters(request), TABLE_COLUMNS)

    def body() -> Iterator[str]:
        yield tsv.row(TABLE_FIELDS) + "\n"
        yield from _lines(batches, tsv.row)

    return _attachment(body(), "file-table.{stamp}.tsv", "text/tab-separated-values")


@router.get("/repository/files.json")
def files_json(request: Request, s: SessionDep, p: PlatformDep) -> Response:
    filters = read_filters(request).resolve(s)
    total, _ = repository.totals(s, filters)
    batches = repository.stream(p.db, filters, TABLE_COLUMNS)

    def body() -> Iterator[str]:
        yield f'{{"total": {total}, "files": ['
        first = True
        for batch in batches:
            rows = [dict(zip(TABLE_FIELDS, r)) for r in batch]
            text = json.dumps(rows, separators=(",", ":"))[1:-1]
            if text:
                yield text if first else "," + text
                first = False
        yield "]}"

    return _attachment(body(), "files.{stamp}.json", "application/json")


@router.get("/file/{object_id}", response_class=HTMLResponse)
@html_errors
def file_page(object_id: str, request: Request, s: SessionDep) -> HTMLResponse:
    who = viewer(request, s)
    f = metadata.get_file(s, object_id)
    objects.require_published(s, f)
    analysis = s.get(Analysis, f.analysis_id)
    samples = metadata.analysis_samples(s, f.analysis_id)
    index = next(iter(metadata.index_files(s, object_id)), None)
    siblings = [o for o in metadata.analysis_files(s, f.analysis_id) if o.object_id != object_id]
    base = base_url(request)
    commands = [
        (
            "Download with score-client",
            f"score-client download --object-id {object_id} --output-dir data",
        )
    ]
    if f.file_name.lower().endswith((".bam", ".cram", ".vcf.gz", ".bcf")):
        region = "chr1:1-100000"
        commands.append(
            (
                "Slice a region without downloading the file",
                f"score-client view --object-id {object_id} --query {region}",
            )
        )
    commands.append(
        (
            "Settings for score-client",
            f"export METADATA_URL={base} STORAGE_URL={base} ACCESSTOKEN=<your token>",
        )
    )
    region = request.query_params.get("region", "")
    view_link = None
    if viewing.kind_of(f.file_name) is not None:
        query = f"?{urlencode({'region': region})}" if region else ""
        view_link = f"/file/{object_id}/view{query}"
    return templates.TemplateResponse(
        request,
        "file.html",
        {
            "view_link": view_link,
            "who": who,
            "f": f,
            "analysis": analysis,
            "index": index,
            "siblings": siblings,
            "donors": sorted({x["donor"]["donorId"] for x in samples if x.get("donor")}),
            "samples": sorted({x["sampleId"] for x in samples}),
            "commands": commands,
            "human": human,
            "may": can(who, Action.READ, f.study_id, f.file_access),
            "message": None,
            "here": here(request),
        },
    )


@router.get("/file/{object_id}/download")
@html_errors
def file_download(
    object_id: str, request: Request, s: SessionDep, signer: SignerDep
) -> RedirectResponse:
    """A redirect to a signed storage URL: the bytes come from the store, not this page."""
    who = viewer(request, s)
    f = metadata.get_file(s, object_id)
    objects.authorize_read(s, who, f, "portal.download", verb="download")
    url = signer.store.url_for_get(
        f.object_id,
        base_url=signer.base_url,
        expires_in=signer.download_expiry,
        filename=f.file_name,
    )
    audit.ranges([(0, f.file_size)])
    return RedirectResponse(url, status_code=303)


@router.get("/file/{object_id}/view", response_class=HTMLResponse)
@html_errors
def file_view(object_id: str, request: Request, s: SessionDep, signer: SignerDep) -> HTMLResponse:
    """A region of a BAM, CRAM or VCF in igv.js: the page says how to read it (viewer.py);
    igv.js then reads it from htsget or signed URLs with the visitor's sign-in. A file the
    viewer cannot show, or a region outside the genome, is a sentence on the page."""
    who = viewer(request, s)
    f = metadata.get_file(s, object_id)
    objects.authorize_read(s, who, f, "portal.view", verb="view")
    settings = request.app.state.platform.settings
    script = viewing.igv_script(settings)
    params = request.query_params
    view, problem, status = None, None, 200
    try:
        if script is None:
            raise viewing.problem(
                "The genome viewer (igv.js) is not installed on this server; its operator "
                "runs 'score-server viewer install'.",
                status=503,
            )
        view = viewing.plan(
            s, signer.store, f, settings.viewer_reference, params.get("region"), params.get("via")
        )
    except ApiError as exc:
        if exc.error_id != "viewer.problem":
            raise
        problem, status = exc.message, exc.status
    base = base_url(request)
    config = None
    if view is not None:
        config = {
            "objectId": f.object_id,
            "name": f.file_name,
            "track": view.kind.track,
            "format": view.kind.fmt,
            "via": view.via,
            "htsget": (
                f"{base}/htsget/{view.kind.htsget}/{f.object_id}" if view.kind.htsget else None
            ),
            "indexId": view.index_id,
            "reference": (
                {"fasta": view.reference[0], "index": view.reference[1]} if view.reference else None
            ),
            "chromSizes": None if view.reference else f"/file/{f.object_id}/view/chrom.sizes",
            "locus": str(view.region),
            "drs": f"{base}/ga4gh/drs/v1/objects/",
            "urlLifetime": signer.download_expiry,
        }

    def link(**changes: str) -> str:
        query = {k: v for k, v in params.items() if k in ("region", "via")}
        query.update(changes)
        return f"/file/{object_id}/view?{urlencode(query)}"

    response = templates.TemplateResponse(
        request,
        "viewer.html",
        {
            "who": who,
            "f": f,
            "view": view,
            "config": config,
            "problem": problem,
            "region": str(view.region) if view else params.get("region", ""),
            "via_links": (
                {"htsget": link(via="htsget"), "url": link(via="url")}
                if view is not None and view.kind.htsget
                else None
            ),
            "message": None,
            "here": here(request),
        },
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = viewer_csp(signer, script)
    return response


def viewer_csp(signer: Signer, script: Path | None) -> str:
    """The portal's policy, plus what igv.js needs: the store's origin to read signed URLs
    from (an S3 store's; the local store is this origin), the one inline style it injects
    (by hash), and WebAssembly (its CRAM codecs; 'wasm-unsafe-eval' compiles WebAssembly,
    it evaluates no JavaScript). Scripts stay this origin's files: no inline script, no eval,
    no other origin."""
    sample = signer.store.url_for_get(objects.SENTINEL, base_url=signer.base_url, expires_in=60)
    parts = urlsplit(sample)
    store = f"{parts.scheme}://{parts.netloc}"
    styles = viewing.inline_styles(script, script.stat().st_mtime_ns) if script else ()
    connect = f"default-src 'self'; connect-src 'self' {store};"
    csp = edge.CSP.replace("default-src 'self';", connect)
    csp = csp.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
    return csp.replace("style-src 'self'", " ".join(["style-src 'self'", *styles]))


@router.get("/file/{object_id}/view/chrom.sizes", response_class=PlainTextResponse)
@html_errors
def chrom_sizes(object_id: str, request: Request, s: SessionDep, signer: SignerDep) -> Response:
    """The sequences (name, length) the viewer navigates when no reference genome is set:
    those the file's header names."""
    f = metadata.get_file(s, object_id)
    objects.authorize_read(s, viewer(request, s), f, None, verb="view")
    view = viewing.plan(s, signer.store, f, "", None, None)
    return PlainTextResponse("".join(f"{name}\t{length}\n" for name, length in view.sequences))


@router.get("/portal/viewer/igv.min.js")
def igv_script(request: Request) -> Response:
    """igv.js, as installed on this server (npm `igv`): the viewer fetches nothing from any
    other origin."""
    script = viewing.igv_script(request.app.state.platform.settings)
    if script is None:
        raise ApiError(404, "viewer.not.installed", "igv.js is not installed on this server")
    return FileResponse(
        script, media_type="text/javascript", headers={"Cache-Control": "public, max-age=3600"}
    )


def _back(next_url: str) -> str:
    return next_url if next_url.startswith("/") and not next_url.startswith("//") else "/repository"


def _same_origin(request: Request) -> None:
    """Sign-in and sign-out change who the browser is here: only this site's own pages may
    ask (no cross-site form posts)."""
    if not edge.same_origin_form(request.headers, base_url(request)):
        raise ApiError(403, "csrf.refused", "Sign-in and sign-out are only taken from this site")


@router.post("/portal/sign-in")
def sign_in(
    request: Request, s: SessionDep, token: str = Form(...), next: str = Form("/repository")
) -> RedirectResponse:
    _same_origin(request)
    try:
        who = principal_for(
            s, f"Bearer {token.strip()}", request.app.state.platform.identity.resolve
        )
    except ApiError as exc:
        return RedirectResponse(_with_message(_back(next), exc.message), status_code=303)
    response = RedirectResponse(_back(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        # the cookie is the token itself: never over plain HTTP when clients use HTTPS
        secure=base_url(request).startswith("https://") or request.url.scheme == "https",
        max_age=12 * 3600,
    )
    if who is None:
        response.delete_cookie(COOKIE)
    return response


@router.post("/portal/sign-out")
def sign_out(request: Request, next: str = Form("/repository")) -> RedirectResponse:
    _same_origin(request)
    response = RedirectResponse(_back(next), status_code=303)
    response.delete_cookie(COOKIE)
    return response


def install(app) -> None:
    app.include_router(router)
    app.mount("/portal/static", static, name="portal_static")
