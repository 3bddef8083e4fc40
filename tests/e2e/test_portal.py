"""The File Repository web page in a real browser: Debian's Chromium driven by Playwright.

Needs `chromium` (Debian package) and `playwright` (PyPI, in the `test` extra); scripts/test.sh
installs both. `playwright install` is never run: the browser is Debian's, launched by path
with flags that keep it off the network (no component updates, sync or background requests),
and Playwright gives each launch a fresh temporary profile. One browser per module; each test
gets its own context (cookies, downloads, clipboard) and page. Screenshots of the repository
page and a file page are written to test-artifacts/ at the repository root.

What a visitor does is done through the page (ticking boxes, typing, clicking headers, links
and menus, the keyboard); what they get is checked against the demo files themselves, and the
File Manifest the page hands out is fed to the real `score-client`.
"""

from __future__ import annotations

import json
import random
import re
import shlex
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlparse

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pyscore.wire.manifest import ARGO_COLUMNS, parse_download
from tests.api import song_error
from tests.conftest import init_server, need
from tests.publish import KINDS, add_donors, add_published_analysis, file_md5, md5

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # every Playwright wait is bounded by this: for a busy machine, not a time limit
DATA_FILES = [
    "DONOR-1-N.bam",
    "DONOR-1-N.cram",
    "DONOR-1-N.vcf.gz",
    "DONOR-2-N.bam",
    "DONOR-2-N.cram",
    "DONOR-2-N.vcf.gz",
    "clinical.tsv",
    "reference.fa",
]
OPEN_FILES = {"clinical.tsv", "reference.fa"}


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def chromium(*extra: str) -> Iterator[Browser]:
    """Debian's Chromium under Playwright for a module (`extra`: more command-line flags)."""
    executable = need("chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_ARGS, *extra], timeout=WAIT_MS
        )
        yield launched
        launched.close()


def new_page(browser: Browser, base_url: str, **options: object) -> Page:
    """A page in a context of its own (`options`: more of new_context's, e.g. viewport)."""
    context = browser.new_context(base_url=base_url, accept_downloads=True, **options)
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(WAIT_MS)
    return context.new_page()


@pytest.fixture
def page(browser, demo_server):
    page = new_page(browser, demo_server.url)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def reader(demo_server) -> str:
    return demo_server.token("PROGRAMDATA-DEMO.READ", "--user", "reader")


@pytest.fixture(scope="module")
def manifest(demo_server) -> dict:
    """The demo's data files by name, from the manifest `score-server demo` wrote."""
    rows = parse_download(demo_server.manifest.read_text(), str(demo_server.manifest))
    return {r.fileName: r for r in rows}


# -- reading the page -----------------------------------------------------------------------
ROWS_JS = """rows => rows.map(r => ({
  id: r.dataset.objectId,
  name: r.cells[0].innerText.trim(),
  href: r.cells[0].querySelector('a').getAttribute('href'),
  donors: r.cells[5].innerText.trim(),
  fileType: r.cells[1].innerText.trim(),
  bytes: Number(r.cells[2].dataset.bytes),
  access: r.cells[3].querySelector('.badge').innerText.trim(),
  may: r.cells[3].querySelector('.ok') !== null,
  analysis: r.cells[8].innerText.trim(),
}))"""
FACETS_JS = """sets => Object.fromEntries(sets.map(f => [f.dataset.facet, Object.fromEntries(
  [...f.querySelectorAll('.choice')].map(c => [c.querySelector('label').innerText.trim(),
                                               Number(c.querySelector('.count').innerText)]))]))"""


def rows(page: Page) -> list[dict]:
    return page.eval_on_selector_all("tbody tr[data-object-id]", ROWS_JS)


def names(page: Page) -> list[str]:
    return [r["name"] for r in rows(page)]


def facets(page: Page) -> dict[str, dict[str, int]]:
    return page.eval_on_selector_all("fieldset.facet", FACETS_JS)


def total(page: Page) -> int:
    return int(page.locator("#total").inner_text())


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def has_param(name: str, value: str):
    return lambda url: (name, value) in parse_qsl(urlparse(url).query)


def tick(page: Page, label: str) -> None:
    """Tick a facet box by its label; the page applies it at once (a new URL)."""
    box = page.get_by_label(label, exact=True)
    expect(box).not_to_be_checked()
    name, value = box.get_attribute("name"), box.get_attribute("value")
    box.click()
    page.wait_for_url(has_param(name, value))


def open_download_menu(page: Page) -> None:
    if page.locator("details.menu").get_attribute("open") is None:
        page.locator("details.menu > summary").click()
    expect(page.get_by_role("link", name="File Manifest")).to_be_visible()


def download(page: Page, link: str, into: Path):
    """Click a link that downloads; return (suggested file name, saved path)."""
    with page.expect_download(timeout=WAIT_MS) as info:
        page.get_by_role("link", name=link, exact=True).click()
    got = info.value
    assert got.failure() is None, got.failure()
    path = into / got.suggested_filename
    got.save_as(path)
    return got.suggested_filename, path


def sign_in(page: Page, token: str) -> None:
    page.get_by_label("Access token").fill(token)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def signed_in_as(page: Page, user: str) -> None:
    expect(page.locator("header")).to_contain_text(f"Signed in as {user}")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_label("Access token")).to_have_count(0)


def meta(page: Page) -> dict[str, str]:
    """A file page's metadata list, term → text."""
    return page.eval_on_selector_all(
        "dl.meta dt",
        "dts => Object.fromEntries(dts.map(dt => [dt.innerText.trim(), "
        "dt.nextElementSibling.innerText.trim()]))",
    )


def donor_ids(page: Page) -> tuple[str, str]:
    """The platform's ids of DONOR-1 and DONOR-2 (the table shows ids, not submitter ids)."""
    by_name = {r["name"]: r["donors"] for r in rows(page)}
    return by_name["DONOR-1-N.bam"], by_name["DONOR-2-N.bam"]


# -- the repository page --------------------------------------------------------------------
def test_repository_lists_the_demo_files_with_facet_counts(page, manifest):
    page.goto("/repository")
    expect(page).to_have_title(re.compile("File Repository"))
    got = rows(page)
    assert [r["name"] for r in got] == DATA_FILES  # sorted by file name by default
    assert {r["name"]: r["id"] for r in got} == {n: m.objectId for n, m in manifest.items()}
    assert {r["name"]: r["bytes"] for r in got} == {n: m.fileSize for n, m in manifest.items()}
    assert all(r["href"] == f"/file/{r['id']}" for r in got)
    assert total(page) == 8
    donor1, donor2 = donor_ids(page)
    counts = facets(page)
    assert counts == {
        "study": {"DEMO": 8},
        "data_type": {
            "Aligned Reads": 4,
            "Simple Nucleotide Variation": 2,
            "Clinical Data": 1,
            "Reference Genome": 1,
        },
        "file_type": {"BAM": 2, "CRAM": 2, "VCF": 2, "FASTA": 1, "TSV": 1},
        "access": {"controlled": 6, "open": 2},
        "analysis_type": {"sequencingRead": 5, "variantCall": 2, "clinicalData": 1},
        "donor": {donor1: 5, donor2: 4},  # the clinical TSV belongs to both donors
    }
    for values in counts.values():  # most frequent first
        assert list(values.values()) == sorted(values.values(), reverse=True)
    # each count is shown on the line of its value
    for label, count in (
        ("DEMO", "8"),
        ("BAM", "2"),
        ("CRAM", "2"),
        ("VCF", "2"),
        ("open", "2"),
        ("controlled", "6"),
    ):
        choice = page.locator(".choice").filter(has=page.get_by_label(label, exact=True))
        expect(choice.locator(".count")).to_have_text(count)
        box = choice.locator("label").bounding_box()
        number = choice.locator(".count").bounding_box()
        assert box and number and abs(box["y"] - number["y"]) < box["height"], (label, box)
        assert number["x"] > box["x"]
    page.screenshot(path=str(ARTIFACTS / "portal-repository.png"), full_page=True)


def test_ticking_a_facet_filters_and_the_url_reproduces_the_view(page, browser, demo_server):
    page.goto("/repository")
    tick(page, "BAM")
    assert query(page)["file_type"] == ["BAM"]
    assert names(page) == ["DONOR-1-N.bam", "DONOR-2-N.bam"]
    assert total(page) == 2
    expect(page.get_by_label("BAM", exact=True)).to_be_checked()
    counts = facets(page)
    assert counts["study"] == {"DEMO": 2}  # the other facets count within the selection
    assert counts["access"] == {"controlled": 2}
    assert counts["file_type"]["CRAM"] == 2  # a facet does not count itself out
    url = page.url
    page.reload()
    assert names(page) == ["DONOR-1-N.bam", "DONOR-2-N.bam"]
    expect(page.get_by_label("BAM", exact=True)).to_be_checked()
    # the same link in a browser that has never seen the page
    other = new_page(browser, demo_server.url)
    try:
        other.goto(url)
        assert names(other) == ["DONOR-1-N.bam", "DONOR-2-N.bam"]
        assert total(other) == 2
        expect(other.get_by_label("BAM", exact=True)).to_be_checked()
        expect(other.get_by_label("CRAM", exact=True)).not_to_be_checked()
    finally:
        other.context.close()


def test_facets_combine(page):
    page.goto("/repository")
    donor1, donor2 = donor_ids(page)
    tick(page, "BAM")
    tick(page, "CRAM")  # two values of one facet: either
    assert query(page)["file_type"] == ["BAM", "CRAM"]
    assert names(page) == ["DONOR-1-N.bam", "DONOR-1-N.cram", "DONOR-2-N.bam", "DONOR-2-N.cram"]
    assert facets(page)["donor"] == {donor1: 2, donor2: 2}
    tick(page, donor2)  # and another facet: both
    assert query(page)["donor"] == [donor2]
    assert query(page)["file_type"] == ["BAM", "CRAM"]
    assert names(page) == ["DONOR-2-N.bam", "DONOR-2-N.cram"]
    assert total(page) == 2
    counts = facets(page)
    assert counts["file_type"] == {"BAM": 1, "CRAM": 1, "VCF": 1, "TSV": 1}
    assert counts["donor"] == {donor1: 2, donor2: 2}
    for label in ("BAM", "CRAM", donor2):
        expect(page.get_by_label(label, exact=True)).to_be_checked()


def test_search_box_filters_and_clear_all_resets(page):
    page.goto("/repository")
    _, donor2 = donor_ids(page)
    search = page.get_by_label("Search")
    search.fill("DONOR-2")
    search.press("Enter")
    page.wait_for_url(has_param("q", "DONOR-2"))
    # the submitter's donor id matches too: DONOR-2's own files and the clinical table
    assert names(page) == ["DONOR-2-N.bam", "DONOR-2-N.cram", "DONOR-2-N.vcf.gz", "clinical.tsv"]
    assert total(page) == 4
    assert facets(page)["file_type"] == {"BAM": 1, "CRAM": 1, "VCF": 1, "TSV": 1}
    expect(search).to_have_value("DONOR-2")
    tick(page, "VCF")  # search and facets together; the search stays
    assert query(page)["q"] == ["DONOR-2"]
    assert names(page) == ["DONOR-2-N.vcf.gz"]
    # a new search keeps the ticked boxes
    search.fill(donor2)
    search.press("Enter")
    page.wait_for_url(has_param("q", donor2))
    assert names(page) == ["DONOR-2-N.vcf.gz"]
    expect(page.get_by_label("VCF", exact=True)).to_be_checked()
    page.get_by_role("link", name="Clear all").click()
    page.wait_for_url(re.compile(r"/repository$"))
    assert names(page) == DATA_FILES
    assert total(page) == 8
    expect(page.locator("input[type=checkbox]:checked")).to_have_count(0)
    expect(page.get_by_label("Search")).to_have_value("")
    # the donor's platform id finds all of the donor's files (as many as its facet count);
    # 'DONOR-2' above matched file names only: submitter ids are not searchable
    page.get_by_label("Search").fill(donor2)
    page.get_by_label("Search").press("Enter")
    page.wait_for_url(has_param("q", donor2))
    assert names(page) == ["DONOR-2-N.bam", "DONOR-2-N.cram", "DONOR-2-N.vcf.gz", "clinical.tsv"]


def test_sorting_by_the_size_header(page):
    page.goto("/repository")
    link = page.get_by_role("link", name=re.compile(r"^Size"))
    header = page.locator("th").filter(has=link)
    expect(header).to_have_attribute("aria-sort", "none")
    link.click()
    page.wait_for_url(
        lambda url: (
            dict(parse_qsl(urlparse(url).query)).get("sort") == "size"
            and dict(parse_qsl(urlparse(url).query)).get("order") == "asc"
        )
    )
    ascending = rows(page)
    sizes = [r["bytes"] for r in ascending]
    assert len(set(sizes)) == 8, "the demo files' sizes are distinct, so the order is strict"
    assert sizes == sorted(sizes)
    expect(header).to_have_attribute("aria-sort", "ascending")
    link.click()
    page.wait_for_url(has_param("order", "desc"))
    descending = rows(page)
    assert [r["bytes"] for r in descending] == sorted(sizes, reverse=True)
    assert [r["name"] for r in descending] == [r["name"] for r in reversed(ascending)]
    expect(header).to_have_attribute("aria-sort", "descending")


def test_pagination_with_three_per_page(page):
    page.goto("/repository")
    everything = sorted(rows(page), key=lambda r: -r["bytes"])
    page.goto("/repository?size=3&sort=size&order=desc")
    seen = []
    for number, expected in ((1, 3), (2, 3), (3, 2)):
        expect(page.locator("nav.pages")).to_contain_text(f"Page {number} of 3")
        got = rows(page)
        assert len(got) == expected
        assert total(page) == 8  # the whole selection, not the page
        assert facets(page)["study"] == {"DEMO": 8}
        assert facets(page)["file_type"]["BAM"] == 2
        seen.append(got)
        if number < 3:
            page.get_by_role("link", name="Next").click()
            page.wait_for_url(has_param("page", str(number + 1)))
            assert query(page)["size"] == ["3"]
            assert query(page)["sort"] == ["size"]
    expect(page.get_by_role("link", name="Next")).to_have_count(0)
    assert [r["id"] for part in seen for r in part] == [r["id"] for r in everything]
    page.get_by_role("link", name="Previous").click()
    page.wait_for_url(has_param("page", "2"))
    assert rows(page) == seen[1]
    page.get_by_role("link", name="Previous").click()
    page.wait_for_url(has_param("page", "1"))
    assert rows(page) == seen[0]
    expect(page.get_by_role("link", name="Previous")).to_have_count(0)


def test_a_page_past_the_end_shows_the_last_page(page):
    page.goto("/repository?size=3&page=9")
    expect(page.locator("nav.pages")).to_contain_text("Page 3 of 3")
    assert len(rows(page)) == 2


# -- exports --------------------------------------------------------------------------------
def test_file_manifest_of_the_selection_feeds_score_client(
    page, demo_server, demo_files, reader, tmp_path
):
    page.goto("/repository")
    tick(page, "CRAM")
    shown = rows(page)
    open_download_menu(page)
    name, path = download(page, "File Manifest", tmp_path)
    assert re.fullmatch(r"score-manifest\.\d{14}\.tsv", name), name
    assert path.read_text().splitlines()[0].split("\t") == list(ARGO_COLUMNS)
    listed = parse_download(path.read_text(), str(path))
    assert [r.objectId for r in listed] == [r["id"] for r in shown]
    assert [r.fileName for r in listed] == ["DONOR-1-N.cram", "DONOR-2-N.cram"]
    assert all(r.indexObjectId for r in listed)

    out = tmp_path / "out"
    result = demo_server.client(
        "download", "--manifest", str(path), "--output-dir", str(out), token=reader
    )
    assert result.returncode == 0, result.stderr
    fetched = {p.relative_to(out).as_posix(): file_md5(p) for p in out.rglob("*") if p.is_file()}
    wanted = ["DONOR-1-N.cram", "DONOR-1-N.cram.crai", "DONOR-2-N.cram", "DONOR-2-N.cram.crai"]
    assert fetched == {n: file_md5(demo_files / n) for n in wanted}
    assert {r.fileName: r.fileMd5sum for r in listed} == {
        n: fetched[n] for n in ("DONOR-1-N.cram", "DONOR-2-N.cram")
    }


def test_table_and_json_exports_return_the_whole_selection(page, tmp_path):
    selection = "access=controlled&q=DONOR-1&sort=size&order=desc"
    page.goto(f"/repository?{selection}")
    everything = rows(page)
    assert [r["name"] for r in everything] == [
        "DONOR-1-N.bam",
        "DONOR-1-N.cram",
        "DONOR-1-N.vcf.gz",
    ]
    page.goto(f"/repository?{selection}&size=2")  # the exports are the selection, not the page
    assert len(rows(page)) == 2
    open_download_menu(page)
    name, path = download(page, "Table (TSV)", tmp_path)
    assert re.fullmatch(r"file-table\.\d{14}\.tsv", name), name
    header, *lines = [line.split("\t") for line in path.read_text().splitlines()]
    table = [dict(zip(header, line)) for line in lines]
    assert [t["object_id"] for t in table] == [r["id"] for r in everything]
    assert [t["file_name"] for t in table] == [r["name"] for r in everything]
    assert [int(t["size"]) for t in table] == [r["bytes"] for r in everything]
    assert {t["access"] for t in table} == {"controlled"}
    assert all(re.fullmatch(r"[0-9a-f]{32}", t["md5"]) for t in table)

    open_download_menu(page)
    name, path = download(page, "JSON", tmp_path)
    assert re.fullmatch(r"files\.\d{14}\.json", name), name
    body = json.loads(path.read_text())
    assert body["total"] == 3
    assert [f["object_id"] for f in body["files"]] == [r["id"] for r in everything]
    assert [f["size"] for f in body["files"]] == [r["bytes"] for r in everything]
    assert [f["md5"] for f in body["files"]] == [t["md5"] for t in table]


# -- file pages -----------------------------------------------------------------------------
def test_file_page_metadata_links_and_commands(
    page, demo_server, demo_files, manifest, reader, tmp_path
):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=demo_server.url)
    bam, bai = manifest["DONOR-1-N.bam"], manifest["DONOR-1-N.bam"].indexObjectId
    page.goto("/repository")
    row = next(r for r in rows(page) if r["name"] == "DONOR-1-N.bam")
    page.get_by_role("link", name="DONOR-1-N.bam", exact=True).click()
    page.wait_for_url(f"**/file/{bam.objectId}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("DONOR-1-N.bam")
    expect(page.get_by_role("heading", level=1)).to_contain_text("controlled")
    info = meta(page)
    assert info["Object id"] == bam.objectId
    assert info["Study"] == "DEMO"
    assert info["MD5"] == bam.fileMd5sum == file_md5(demo_files / "DONOR-1-N.bam")
    assert info["Size"].endswith(f"({bam.fileSize:,} bytes)")
    assert info["File type"] == "BAM"
    assert info["Data type"] == "Aligned Reads"
    assert info["Donors"] == row["donors"]
    # the analysis the file belongs to
    assert info["Analysis"] == f"{bam.analysisId} (sequencingRead v1, PUBLISHED)"
    assert bam.analysisId.startswith(row["analysis"])
    index = page.locator("dl.meta dt:text-is('Index file') + dd a")
    expect(index).to_have_text("DONOR-1-N.bam.bai")
    expect(index).to_have_attribute("href", f"/file/{bai}")
    siblings = page.locator("dl.meta dt:text-is('Other files of the analysis') + dd a")
    expect(siblings).to_have_text(["DONOR-1-N.bam.bai"])

    download_cmd = page.get_by_label("Download with score-client")
    view_cmd = page.get_by_label("Slice a region without downloading the file")
    expect(download_cmd).to_have_value(
        f"score-client download --object-id {bam.objectId} --output-dir data"
    )
    expect(view_cmd).to_have_value(
        re.compile(rf"^score-client view --object-id {bam.objectId} --query \S+$")
    )
    for field in (download_cmd, view_cmd):
        button = page.locator(".command").filter(has=field).get_by_role("button")
        expect(button).to_have_text("Copy")
        button.click()
        expect(button).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == field.input_value()
    page.screenshot(path=str(ARTIFACTS / "portal-file.png"), full_page=True)

    # the copied commands work as they are
    args = shlex.split(download_cmd.input_value())
    assert args[0] == "score-client"
    result = demo_server.client(*args[1:], token=reader, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("DONOR-1-N.bam", "DONOR-1-N.bam.bai"):
        assert file_md5(tmp_path / "data" / name) == file_md5(demo_files / name)
    args = shlex.split(view_cmd.input_value())
    result = demo_server.client(*args[1:], token=reader, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("@HD")
    assert any(
        line.split("\t")[2] == "chr1"
        for line in result.stdout.splitlines()
        if not line.startswith("@")
    )

    index.click()
    page.wait_for_url(f"**/file/{bai}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("DONOR-1-N.bam.bai")
    assert meta(page)["Object id"] == bai
    assert meta(page)["MD5"] == file_md5(demo_files / "DONOR-1-N.bam.bai")


def test_reader_sees_may_download_and_downloads_through_the_browser(
    page, demo_server, demo_files, manifest, reader
):
    page.goto("/repository")
    assert {r["name"] for r in rows(page) if r["may"]} == OPEN_FILES
    sign_in(page, reader)
    signed_in_as(page, "reader")
    assert all(r["may"] for r in rows(page))
    assert len(rows(page)) == 8

    vcf = manifest["DONOR-1-N.vcf.gz"]
    page.get_by_role("link", name="DONOR-1-N.vcf.gz", exact=True).click()
    page.wait_for_url(f"**/file/{vcf.objectId}")
    signed_in_as(page, "reader")
    link = page.get_by_role("link", name="Download through the browser")
    href = link.get_attribute("href")
    assert href == f"/file/{vcf.objectId}/download"
    # a redirect to a signed storage URL, which works on its own (no cookie, no token)
    response = page.request.get(href, max_redirects=0)
    assert response.status == 303
    signed = response.headers["location"]
    assert "sig=" in signed and "Expires=" in signed
    fetched = httpx.get(signed, timeout=60)
    assert fetched.status_code == 200
    assert md5(fetched.content) == vcf.fileMd5sum == file_md5(demo_files / "DONOR-1-N.vcf.gz")
    # and clicking it downloads the file
    with page.expect_download() as info:
        link.click()
    assert file_md5(Path(info.value.path())) == vcf.fileMd5sum

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"**/file/{vcf.objectId}*")  # back where we were
    expect(page.get_by_label("Access token")).to_be_visible()
    expect(page.get_by_role("link", name="Download through the browser")).to_have_count(0)
    expect(page.locator(".locked")).to_contain_text("sign in")
    assert "score_token" not in {c["name"] for c in page.context.cookies()}
    assert page.request.get(href, max_redirects=0).status == 401
    page.goto("/repository")
    assert {r["name"] for r in rows(page) if r["may"]} == OPEN_FILES


def test_browser_download_is_saved_under_the_file_name(page, manifest, reader):
    page.goto("/repository")
    sign_in(page, reader)
    page.goto(f"/file/{manifest['DONOR-1-N.bam'].indexObjectId}")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download through the browser").click()
    assert info.value.suggested_filename == "DONOR-1-N.bam.bai"


def test_anonymous_visitor_sees_metadata_and_may_fetch_open_files(page, demo_files, manifest):
    page.goto("/repository")
    expect(page.get_by_label("Access token")).to_be_visible()
    got = rows(page)
    assert len(got) == 8  # everyone sees all the metadata
    assert {r["name"] for r in got if r["may"]} == OPEN_FILES
    assert {r["name"] for r in got if r["access"] == "open"} == OPEN_FILES

    bam = manifest["DONOR-1-N.bam"]
    page.goto(f"/file/{bam.objectId}")
    assert meta(page)["MD5"] == bam.fileMd5sum
    expect(page.get_by_label("Download with score-client")).to_have_value(re.compile(bam.objectId))
    expect(page.locator(".locked")).to_contain_text(
        "sign in with a token holding PROGRAMDATA-DEMO.READ"
    )
    expect(page.get_by_role("link", name="Download through the browser")).to_have_count(0)
    assert page.request.get(f"/file/{bam.objectId}/download", max_redirects=0).status == 401

    clinical = manifest["clinical.tsv"]
    page.goto(f"/file/{clinical.objectId}")
    expect(page.locator(".locked")).to_have_count(0)
    with page.expect_download() as info:
        page.get_by_role("link", name="Download through the browser").click()
    assert file_md5(Path(info.value.path())) == file_md5(demo_files / "clinical.tsv")


def test_signing_in_with_a_bad_token_says_so(page):
    page.goto("/repository?file_type=BAM")
    sign_in(page, "not-a-valid-token")
    expect(page.get_by_role("status")).to_have_text("Invalid access token")
    expect(page.get_by_label("Access token")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    assert "score_token" not in {c["name"] for c in page.context.cookies()}
    assert "file_type=BAM" in page.url  # back on the page the visitor was on
    assert [r["name"] for r in rows(page)] == ["DONOR-1-N.bam", "DONOR-2-N.bam"]
    assert not any(r["may"] for r in rows(page))  # controlled, and still anonymous


def test_the_sign_in_error_goes_away_once_signed_in(page, reader):
    page.goto("/repository")
    sign_in(page, "not-a-valid-token")
    expect(page.get_by_role("status")).to_have_text("Invalid access token")
    sign_in(page, reader)
    signed_in_as(page, "reader")
    assert page.get_by_role("status").count() == 0, page.get_by_role("status").inner_text()


# -- what a browser shows: errors as pages, a table that fits, commands that read right -----
SCALES = (1, 2)  # device scale factors: an ordinary screen, and a HiDPI one


def wide_page(browser: Browser, base_url: str, scale: int) -> Page:
    """A 1400 px wide window at this device scale factor."""
    return new_page(
        browser, base_url, viewport={"width": 1400, "height": 900}, device_scale_factor=scale
    )


@pytest.mark.parametrize("scale", SCALES)
def test_an_unknown_file_is_a_page_for_a_browser_and_json_for_a_client(
    browser, demo_server, manifest, scale
):
    unknown = str(uuid.uuid4())
    page = wide_page(browser, demo_server.url, scale)
    response = page.goto(f"/file/{unknown}")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page).to_have_title("No such file · pyscore")
    expect(page.get_by_role("heading", level=1)).to_have_text("No such file")
    expect(page.locator("main p.reason")).to_have_text(f"The objectId '{unknown}' does not exist")
    page.screenshot(path=str(ARTIFACTS / f"portal-404-dsf{scale}.png"))
    page.get_by_role("link", name="← File Repository").click()
    page.wait_for_url("**/repository")
    # a controlled file's download, for a visitor not signed in: a page that says to sign in
    response = page.goto(f"/file/{manifest['DONOR-1-N.bam'].objectId}/download")
    assert response is not None and response.status == 401
    assert response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to get this file")
    expect(page.get_by_label("Access token")).to_be_visible()
    page.context.close()
    # API clients (httpx, curl: Accept */*) still get Song's JSON, as from every other route
    song_error(
        httpx.get(f"{demo_server.url}/file/{unknown}", timeout=60), 404, "file.not.found", unknown
    )


LAYOUT_JS = """() => {
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right}; };
  const pane = document.querySelector('.table-wrap');
  const cells = [...pane.querySelectorAll('th, td')].map(c => ({
    text: c.innerText.trim(), ...box(c), hidden: c.scrollWidth > c.clientWidth}));
  const ids = [...pane.querySelectorAll('tbody tr')].map(r => {
    const id = r.querySelector('td.id span') || r.cells[9];
    return {id: r.dataset.objectId, title: id.title, text: id.textContent};
  });
  return {pane: box(pane), scroll: pane.scrollWidth, client: pane.clientWidth, cells, ids};
}"""


@pytest.mark.parametrize("scale", SCALES)
def test_at_1400_px_every_column_fits_the_results_pane(browser, demo_server, scale):
    page = wide_page(browser, demo_server.url, scale)
    page.goto("/repository")
    layout = page.evaluate(LAYOUT_JS)
    page.screenshot(path=str(ARTIFACTS / f"portal-table-1400-dsf{scale}.png"))
    page.context.close()
    assert layout["scroll"] <= layout["client"], "the table is wider than its pane"
    pane = layout["pane"]
    assert len(layout["cells"]) == 10 * 9  # the header and the 8 demo files
    for cell in layout["cells"]:
        assert pane["left"] <= cell["left"] and cell["right"] <= pane["right"], cell
        assert not cell["hidden"], f"cut inside its cell: {cell}"
    # the object id, shortened to fit, is whole in its title and in what a copy takes
    assert [(x["title"], x["text"]) for x in layout["ids"]] == [
        (x["id"], x["id"]) for x in layout["ids"]
    ]


FITS_JS = """e => {
  const cs = getComputedStyle(e);
  const pen = document.createElement('canvas').getContext('2d');
  pen.font = cs.font;
  const m = pen.measureText(e.value);
  const fontBox = m.fontBoundingBoxAscent + m.fontBoundingBoxDescent;
  const line = cs.lineHeight === 'normal' ? fontBox : parseFloat(cs.lineHeight);
  const half = (line - fontBox) / 2;  // CSS centres the font's box in the line
  return {
    roomBelow: m.fontBoundingBoxDescent + half, inkBelow: m.actualBoundingBoxDescent,
    roomAbove: m.fontBoundingBoxAscent + half, inkAbove: m.actualBoundingBoxAscent,
    line, content: e.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom),
  };
}"""


@pytest.mark.parametrize("scale", SCALES)
def test_command_boxes_show_every_character(browser, demo_server, manifest, scale):
    """The copied text was right, the screen read `METADATA URL=`: an input's line box at
    `line-height: normal` cut off what hangs below the font's descent."""
    page = wide_page(browser, demo_server.url, scale)
    page.goto(f"/file/{manifest['DONOR-1-N.bam'].objectId}")
    page.screenshot(path=str(ARTIFACTS / f"portal-commands-dsf{scale}.png"))
    settings = page.get_by_label("Settings for score-client").input_value()
    assert settings.startswith(f"export METADATA_URL={demo_server.url} STORAGE_URL=")
    boxes = page.locator(".command input")
    assert boxes.count() == 3
    for i in range(boxes.count()):
        box = boxes.nth(i)
        value = box.input_value()
        fit = box.evaluate(FITS_JS)
        assert fit["roomBelow"] >= fit["inkBelow"] and fit["roomAbove"] >= fit["inkAbove"], fit
        assert fit["content"] >= fit["line"], fit
        # and what the screen shows: the same box without its underscores looks different
        shown = box.screenshot()
        box.evaluate("(e, v) => { e.value = v; }", value.replace("_", " "))
        assert ("_" not in value) or box.screenshot() != shown, f"underscores not drawn: {value}"
        box.evaluate("(e, v) => { e.value = v; }", value)
    page.context.close()


# -- accessibility --------------------------------------------------------------------------
CONTROLS_JS = """els => els.map(e => [e.id, e.outerHTML, e.labels && e.labels.length
    ? e.labels[0].innerText.trim() : (e.getAttribute('aria-label') || '')])"""


def test_every_control_has_a_label(page, manifest):
    for path, expected in (("/repository", 20), (f"/file/{manifest['DONOR-1-N.bam'].objectId}", 4)):
        page.goto(path)
        controls = page.eval_on_selector_all(
            "input:not([type=hidden]), select, textarea", CONTROLS_JS
        )
        assert len(controls) >= expected, controls
        for element_id, html, label in controls:
            assert element_id and label, f"no label: {html}"
            # and Playwright (like a screen reader) finds the control by that label
            found = page.get_by_label(label, exact=True).evaluate_all("els => els.map(e => e.id)")
            assert found == [element_id], (label, found)
    page.goto("/repository")
    for label in ("Search", "Access token", "Per page", "DEMO", "BAM", "controlled"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    expect(page.get_by_label("BAM", exact=True)).to_have_attribute("type", "checkbox")


def test_the_page_works_with_the_keyboard(page):
    page.goto("/repository")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.innerText") == "Skip to content"
    target = page.get_by_label("BAM", exact=True).get_attribute("id")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == target:
            break
    else:
        pytest.fail("Tab never reached the BAM checkbox")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focused checkbox shows no focus ring"
    page.keyboard.press("Space")
    page.wait_for_url(has_param("file_type", "BAM"))
    assert names(page) == ["DONOR-1-N.bam", "DONOR-2-N.bam"]
    # the search box: Shift+Tab back to it from the boxes, type, Enter
    page.get_by_label("BAM", exact=True).focus()
    for _ in range(20):
        if page.evaluate("document.activeElement.id") == "q":
            break
        page.keyboard.press("Shift+Tab")
    else:
        pytest.fail("Shift+Tab never reached the search box")
    page.keyboard.type("DONOR-1")
    page.keyboard.press("Enter")
    page.wait_for_url(has_param("q", "DONOR-1"))
    assert names(page) == ["DONOR-1-N.bam"]


# -- scale ----------------------------------------------------------------------------------
SCALE_FILES = 1000
SCALE_DONORS = 125  # more than the 100 values a facet counts, the 25 it shows


def fill(data_dir: Path) -> dict[str, Counter]:
    """Insert SCALE_FILES published files directly (250 analyses of 4 files, 125 donors) and
    build the repository view; return what each facet should count, tallied here."""
    from pyscore.server import repository
    from pyscore.server.db import utcnow
    from pyscore.server.platform import Platform
    from pyscore.server.settings import Settings

    rng = random.Random(11)
    studies = [f"SCALE{i}" for i in range(5)]
    donors = [(studies[d % len(studies)], f"DO{d:06d}") for d in range(SCALE_DONORS)]
    expected: dict[str, Counter] = {
        k: Counter()
        for k in ("study", "data_type", "file_type", "access", "analysis_type", "donor")
    }
    now = utcnow()
    ids = iter(uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(2 * SCALE_FILES))
    platform = Platform.open(Settings.load(data_dir))
    with platform.db.session() as s:
        add_donors(s, studies, [(st, d, "SP" + d, "SA" + d) for st, d in donors])
        for a in range(SCALE_FILES // 4):
            st, donor = donors[a % SCALE_DONORS]
            file_type, data_type, analysis_type = KINDS[(a // 3) % len(KINDS)]
            analysis_id = str(next(ids))
            files = []
            for k in range(4):
                access = "open" if (a + k) % 3 == 0 else "controlled"
                files.append(
                    {
                        "object_id": str(next(ids)),
                        "file_name": f"{donor}.{a}.{k}.{file_type.lower()}",
                        "file_size": rng.randint(10**3, 10**12),
                        "file_type": file_type,
                        "file_access": access,
                        "data_type": data_type,
                    }
                )
                for facet, value in (
                    ("study", st),
                    ("data_type", data_type),
                    ("file_type", file_type),
                    ("access", access),
                    ("analysis_type", analysis_type),
                    ("donor", donor),
                ):
                    expected[facet][value] += 1
            add_published_analysis(s, analysis_id, st, "SA" + donor, analysis_type, now, files)
        s.flush()
        assert repository.rebuild(s) == SCALE_FILES
    platform.db.engine.dispose()
    return expected


@pytest.fixture(scope="module")
def scale(tmp_path_factory):
    server = init_server(tmp_path_factory.mktemp("portal-scale") / "data")
    expected = fill(server.data_dir)
    with server:
        yield server, expected


def test_scale_1000_files_counts_and_pagination(browser, scale):
    server, expected = scale
    page = new_page(browser, server.url)
    try:
        page.goto("/repository")
        assert total(page) == SCALE_FILES
        counts = facets(page)
        for facet in ("study", "data_type", "file_type", "access", "analysis_type"):
            assert counts[facet] == dict(expected[facet]), facet
            assert sum(counts[facet].values()) == SCALE_FILES, facet
        assert len(counts["donor"]) == 25  # the rest are left to the search box
        assert all(counts["donor"][d] == expected["donor"][d] for d in counts["donor"])
        expect(page.locator("fieldset[data-facet=donor] .more")).to_contain_text("use search")

        # within a selection every facet sums to the selection
        tick(page, "SCALE3")
        in_study = expected["study"]["SCALE3"]
        assert total(page) == in_study
        counts = facets(page)
        for facet in ("data_type", "file_type", "access", "analysis_type", "donor"):
            assert sum(counts[facet].values()) == in_study, facet
        assert counts["study"] == dict(expected["study"])  # a facet does not count itself

        # every file once, in order, across the pages (of the largest size offered) to the last
        page.goto("/repository?size=250&sort=size&order=desc")
        pages = -(-SCALE_FILES // 250)
        seen: list[dict] = []
        for number in range(1, pages + 1):
            expect(page.locator("nav.pages")).to_contain_text(f"Page {number} of {pages}")
            seen += rows(page)
            if number < pages:
                page.get_by_role("link", name="Next").click()
                page.wait_for_url(has_param("page", str(number + 1)))
        expect(page.get_by_role("link", name="Next")).to_have_count(0)
        assert total(page) == SCALE_FILES
        assert len(seen) == len({r["id"] for r in seen}) == SCALE_FILES
        sizes = [r["bytes"] for r in seen]
        assert sizes == sorted(sizes, reverse=True)
    finally:
        page.context.close()


def test_a_long_facet_says_how_many_values_are_left(browser, scale):
    server, expected = scale
    page = new_page(browser, server.url)
    try:
        page.goto("/repository")
        more = page.locator("fieldset[data-facet=donor] .more").inner_text()
        assert more.startswith(f"{len(expected['donor']) - 25} more"), more
    finally:
        page.context.close()
