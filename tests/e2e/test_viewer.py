"""The genome viewer (igv.js on /file/{id}/view) and CORS, in a real browser: Debian's
Chromium driven by Playwright, every request to anything but loopback failed (OFFLINE).

One demo platform for the module, with a short URL lifetime (so a page left open must renew
its signed URLs) and one allow-listed origin: a second loopback port, whose static page loads
igv.js as igv-web or a notebook widget would and reads our htsget and a signed URL; a third
port is not listed and reads nothing. What igv.js holds for a region is counted through its
own API (the page's `pyscoreViewer.records`) and compared with samtools/bcftools on the same
region of the same files. Screenshots go to test-artifacts/viewer-*.png.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from pyscore.server.settings import Settings
from pyscore.server.viewer import igv_script
from pyscore.wire.manifest import parse_download
from tests.api import drs_access_url
from tests.conftest import SERVER, free_port, init_demo_server, need, run
from tests.e2e.test_portal import ARTIFACTS, WAIT_MS, chromium
from tests.publish import publish

URL_LIFETIME = 8  # seconds: the page renews its signed URLs after 80% of it
LOOPBACK = ("127.0.0.1", "localhost")


# -- fixtures -------------------------------------------------------------------------------
class StaticSite:
    """Another origin on loopback: a directory served over HTTP on a port of its own."""

    def __init__(self, root: Path, port: int) -> None:
        handler = functools.partial(Quiet, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Two other origins: `allowed` (in cors_origins) and `other` (not), each serving a page
    that loads igv.js (a copy of the one the server serves)."""
    script = igv_script(Settings(data_dir=Path("/nonexistent")))
    if script is None:
        if os.environ.get("PYSCORE_REQUIRE_TOOLS"):
            pytest.fail("igv.js is not installed (scripts/setup.sh runs npm ci)")
        pytest.skip("igv.js is not installed (scripts/setup.sh runs npm ci)")
    root = tmp_path_factory.mktemp("site")
    shutil.copy(script, root / "igv.min.js")
    (root / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        '<script src="igv.min.js"></script></head><body><div id="igv"></div></body></html>'
    )
    allowed, other = StaticSite(root, free_port()), StaticSite(root, free_port())
    yield allowed, other
    allowed.close()
    other.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, sites):
    need("samtools")
    need("bcftools")
    allowed, _ = sites
    server = init_demo_server(tmp_path_factory.mktemp("viewer") / "data")
    server.start(
        env={
            "PYSCORE_CORS_ORIGINS": allowed.url,
            "PYSCORE_DOWNLOAD_EXPIRY_SECONDS": str(URL_LIFETIME),
        }
    )
    server.rows = {r.fileName: r for r in parse_download(server.manifest.read_text(), "m")}
    server.files = server.manifest.parent
    server.reader = server.token("PROGRAMDATA-DEMO.READ", "--user", "reader")
    yield server
    server.stop()


# Every request for a host other than loopback goes to a proxy that is not there, so it fails
# in the browser itself. (Not Playwright's request routing: with a route set, Playwright
# answers CORS preflights itself, and the server's own answers would go untested.)
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost;[::1]"]


@pytest.fixture(scope="module")
def browser():
    yield from chromium(*OFFLINE)


class Visit:
    """A browser context (its own cookies) and page, with what went wrong on the way: console
    errors, page errors, requests to other hosts (aborted), and every response seen."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.context: BrowserContext = browser.new_context(
            base_url=base_url, viewport={"width": 1280, "height": 820}
        )
        self.context.set_default_timeout(WAIT_MS)
        self.context.set_default_navigation_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.responses: list[tuple[int, str, str]] = []
        self.page: Page = self.context.new_page()
        self.page.on("request", self.only_loopback)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "response", lambda r: self.responses.append((r.status, r.request.method, r.url))
        )

    def only_loopback(self, request) -> None:
        """Notes a request for another host (the browser's proxy setting makes it fail)."""
        url = request.url
        if not url.startswith(("data:", "blob:")) and urlsplit(url).hostname not in LOOPBACK:
            self.blocked.append(url)

    def sign_in(self, token: str) -> None:
        self.page.goto("/repository")
        self.page.get_by_label("Access token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_text("Signed in as")).to_be_visible()

    def ready(self) -> None:
        """Until igv.js has drawn the file's track (or the page said why not)."""
        self.page.evaluate("() => window.pyscoreViewer.ready.then(() => true)")

    def records(self, chrom: str, start: int, end: int) -> dict:
        return self.page.evaluate(
            "([c, s, e]) => window.pyscoreViewer.records(c, s, e)", [chrom, start, end]
        )

    def clean(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.blocked, f"requests to other hosts: {self.blocked}"
        failed = [r for r in self.responses if r[0] >= 400]
        assert not failed, f"failed requests: {failed}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, platform):
    v = Visit(browser, platform.url)
    yield v
    v.close()


def samtools_count(path: Path, region: str) -> int:
    # igv.js leaves out duplicates and QC failures, and unmapped reads have no place to show
    out = run(need("samtools"), "view", "-c", "-F", "0x604", str(path), region, check=True)
    return int(out.stdout)


def bcftools_count(path: Path, region: str) -> int:
    out = run(need("bcftools"), "view", "-H", "-r", region, str(path), check=True)
    return len(out.stdout.splitlines())


def view_url(platform, name: str, region: str, via: str | None = None) -> str:
    query = f"?region={region}" + (f"&via={via}" if via else "")
    return f"/file/{platform.rows[name].objectId}/view{query}"


def shown(visit: Visit, chrom: str, start: int, end: int) -> int:
    """The records igv.js holds for [start, end) (0-based), after checking it loaded them."""
    got = visit.records(chrom, start, end)
    assert got is not None, "igv.js holds no features for the file's track"
    loaded_chrom, lo, hi = got["loaded"]
    assert loaded_chrom == chrom and lo <= start and hi >= end, got
    assert not got.get("downsampled"), got
    return got["count"]


def served(visit: Visit, fragment: str, status: int | None = None) -> list[str]:
    return [u for s, _, u in visit.responses if fragment in u and status in (None, s)]


def audited(platform, *filters: str) -> set[str]:
    """The actions `score-server audit` lists with these filters."""
    out = run(SERVER, "audit", "--data-dir", str(platform.data_dir), *filters, "--format", "json")
    assert out.returncode == 0, out.stderr
    return {json.loads(line)["action"] for line in out.stdout.splitlines()}


# -- the viewer page ------------------------------------------------------------------------
def test_a_bam_region_over_htsget_is_one_click_from_the_file_page(visit, platform):
    visit.sign_in(platform.reader)
    bam = platform.rows["DONOR-1-N.bam"]
    visit.page.goto(f"/file/{bam.objectId}")
    visit.page.get_by_role("link", name="View in the genome browser").click()
    visit.page.wait_for_url(f"**/file/{bam.objectId}/view")
    visit.ready()
    # a region typed in the page's own box: the address then names it (a link to share)
    visit.page.get_by_label("Region", exact=True).fill("chr1:10001-12000")
    visit.page.get_by_role("button", name="Show").click()
    visit.page.wait_for_url("**region=chr1%3A10001-12000**")
    visit.ready()
    assert shown(visit, "chr1", 10000, 12000) == samtools_count(
        platform.files / "DONOR-1-N.bam", "chr1:10001-12000"
    )
    assert served(visit, f"/htsget/reads/{bam.objectId}?format=BAM&referenceName=chr1", 200)
    assert served(visit, "/store/objects/", 206)  # the ticket's data blocks
    expect(visit.page.locator("#viewer-message")).to_be_hidden()
    expect(visit.page.locator("#viewer canvas").first).to_be_visible()
    visit.page.screenshot(path=ARTIFACTS / "viewer-bam-htsget.png")
    visit.clean()


def test_a_cram_region_over_signed_urls_with_its_crai_and_the_demo_reference(visit, platform):
    visit.sign_in(platform.reader)
    visit.page.goto(view_url(platform, "DONOR-1-N.cram", "chr2:5001-9000"))
    visit.ready()
    assert shown(visit, "chr2", 5000, 9000) == samtools_count(
        platform.files / "DONOR-1-N.cram", "chr2:5001-9000"
    )
    asked = {urlsplit(u).path.split("/")[-3] for u in served(visit, "/access/https", 200)}
    index = platform.rows["DONOR-1-N.cram"].indexObjectId
    reference = {platform.rows["reference.fa"].objectId}
    assert {platform.rows["DONOR-1-N.cram"].objectId, index} | reference <= asked
    assert not served(visit, "/htsget/")  # igv.js reads no CRAM over htsget
    assert served(visit, f"/store/objects/{platform.rows['DONOR-1-N.cram'].objectId}", 206)
    visit.page.screenshot(path=ARTIFACTS / "viewer-cram-signed-url.png")
    visit.clean()


@pytest.mark.parametrize("via", ["htsget", "url"])
def test_a_vcf_region_both_ways(visit, platform, via):
    visit.sign_in(platform.reader)
    visit.page.goto(view_url(platform, "DONOR-2-N.vcf.gz", "chr1:1-60000", via))
    visit.ready()
    assert shown(visit, "chr1", 0, 60000) == bcftools_count(
        platform.files / "DONOR-2-N.vcf.gz", "chr1:1-60000"
    )
    vcf = platform.rows["DONOR-2-N.vcf.gz"].objectId
    if via == "htsget":
        assert served(visit, f"/htsget/variants/{vcf}?format=VCF", 200)
    else:
        assert served(visit, f"/ga4gh/drs/v1/objects/{vcf}/access/https", 200)
        assert not served(visit, "/htsget/")
    visit.page.screenshot(path=ARTIFACTS / f"viewer-vcf-{via}.png")
    visit.clean()


def test_the_address_follows_the_view_and_opens_the_same_region(visit, browser, platform):
    visit.sign_in(platform.reader)
    visit.page.goto(view_url(platform, "DONOR-1-N.bam", "chr1:10001-12000"))
    visit.ready()
    visit.page.evaluate("() => window.pyscoreViewer.browser.search('chr3:20001-22000')")
    visit.page.wait_for_url("**region=chr3%3A20**")
    shared = visit.page.url
    region = parse_qs(urlsplit(shared).query)["region"][0]
    other = visit.context.new_page()  # the link opened again, as whoever gets it would
    other.goto(shared)
    other.evaluate("() => window.pyscoreViewer.ready.then(() => true)")
    assert other.evaluate("() => window.pyscoreViewer.browser.currentLoci()") == region
    expect(other.get_by_label("Region", exact=True)).to_have_value(region)
    visit.clean()


def test_a_signed_url_that_expires_while_the_page_is_open_is_renewed(visit, platform):
    visit.sign_in(platform.reader)
    cram = platform.rows["DONOR-2-N.cram"]
    visit.page.goto(view_url(platform, "DONOR-2-N.cram", "chr1:1001-3000"))
    visit.ready()
    before = visit.page.evaluate("() => window.pyscoreViewer.renewals.count")
    first = served(visit, f"/store/objects/{cram.objectId}", 206)
    visit.page.wait_for_timeout((URL_LIFETIME + 2) * 1000)  # every URL it holds has expired
    visit.page.evaluate("() => window.pyscoreViewer.browser.search('chr3:30001-32000')")
    visit.page.wait_for_url("**region=chr3%3A30**")
    visit.ready()
    assert shown(visit, "chr3", 30000, 32000) == samtools_count(
        platform.files / "DONOR-2-N.cram", "chr3:30001-32000"
    )
    after = visit.page.evaluate("() => window.pyscoreViewer.renewals.count")
    assert after > before
    later = served(visit, f"/store/objects/{cram.objectId}", 206)[len(first) :]
    assert later and all(u not in first for u in later)  # read through new URLs
    visit.clean()  # no 403 on the way


def test_a_controlled_file_is_refused_without_a_signed_in_token_of_its_study(
    visit, browser, platform
):
    bam = platform.rows["DONOR-1-N.bam"]
    page = visit.page
    response = page.goto(view_url(platform, "DONOR-1-N.bam", "chr1:1-2000"))
    assert response.status == 401
    expect(page.get_by_role("heading", name="Sign in to get this file")).to_be_visible()
    assert not served(visit, "igv.min.js")
    # the API itself, asked as the viewer asks it, without a sign-in
    answer = page.evaluate(
        """async (url) => (await fetch(url, {headers: {'Pyscore-Portal': '1'}})).status""",
        f"/htsget/reads/{bam.objectId}?format=BAM&referenceName=chr1&start=0&end=100",
    )
    assert answer == 401
    other = platform.token("PROGRAMDATA-OTHER.READ", "--user", "outsider")
    visit.sign_in(other)
    assert page.goto(view_url(platform, "DONOR-1-N.bam", "chr1:1-2000")).status == 403
    access = page.evaluate(
        """async (url) => (await fetch(url, {headers: {'Pyscore-Portal': '1'}})).status""",
        f"/ga4gh/drs/v1/objects/{bam.objectId}/access/https",
    )
    assert access == 403
    # without the portal's header the cookie is not a credential at all
    bare = page.evaluate(
        "async (url) => (await fetch(url)).status", f"/ga4gh/drs/v1/objects/{bam.objectId}"
    )
    assert bare == 401
    actions = audited(platform, "--object", bam.objectId, "--outcome", "refused")
    assert {"portal.view", "htsget", "drs.access"} <= actions


def test_the_viewer_reads_are_granted_and_recorded_as_every_read(visit, platform):
    visit.sign_in(platform.reader)
    vcf = platform.rows["DONOR-1-N.vcf.gz"]
    visit.page.goto(view_url(platform, "DONOR-1-N.vcf.gz", "chr2:1-20000"))
    visit.ready()
    granted = ["--object", vcf.objectId, "--subject", "reader", "--outcome", "granted"]
    assert {"portal.view", "htsget"} <= audited(platform, *granted)
    visit.clean()


def test_bad_input_is_a_message_in_the_page(visit, platform, tmp_path):
    visit.sign_in(platform.reader)
    page = visit.page
    cases = {
        view_url(platform, "DONOR-1-N.bam", "chr9:1-1000"): "chr9 is not a sequence of",
        view_url(platform, "DONOR-1-N.bam", "chr3:50001-60000"): "starts past the end of chr3",
        view_url(platform, "DONOR-1-N.bam", "chr1:500-100"): "is not a region",
        view_url(platform, "clinical.tsv", "chr1:1-100"): "The viewer shows BAM, CRAM and VCF",
    }
    lone = tmp_path / "lonely.bam"
    shutil.copy(platform.files / "DONOR-1-N.bam", lone)
    (lone_id,) = publish(platform.data_dir, [lone], study="LONE", access="open")
    cases[f"/file/{lone_id}/view?region=chr1:1-1000"] = "has no index file"
    for url, said in cases.items():
        page.goto(url)
        expect(page.locator("#viewer-message")).to_contain_text(said)
        expect(page.locator("#viewer")).to_have_count(0)  # no canvas, no igv.js
        expect(page.get_by_label("Region", exact=True)).to_be_visible()  # try another
    page.screenshot(path=ARTIFACTS / "viewer-bad-region.png")
    assert not served(visit, "igv.min.js")
    # the one console line: Chromium noting the page's own status (400, or 503 for a CRAM
    # without a reference), which says to a script or curl what the sentence says to a person
    others = [e for e in visit.errors if "responded with a status of 400" not in e]
    assert not others and not visit.blocked


# -- igv.js in a page of another origin -----------------------------------------------------
ORIGIN_JS = """async ([reference, bam, vcf]) => {
  const browser = await igv.createBrowser(document.getElementById('igv'), {
    reference, locus: 'chr1:10001-12000', loadDefaultGenomes: false,
    showCircularViewButton: false});
  await browser.loadTrack({...bam, type: 'alignment', format: 'bam', name: 'bam',
                           samplingDepth: 10000});
  await browser.loadTrack({...vcf, type: 'variant', format: 'vcf', name: 'vcf'});
  window.theBrowser = browser;
  const count = (type, s, e) => {
    const cache = browser.trackViews.find(v => v.track && v.track.type === type)
      .viewports[0].featureCache;
    const all = type === 'alignment' ? cache.features.allAlignments() : cache.features;
    return all.filter(r => r.chr === 'chr1' && r.start < e &&
                      (r.lengthOnRef !== undefined ? r.start + r.lengthOnRef : r.end) > s).length;
  };
  return {reads: count('alignment', 10000, 12000), variants: count('variant', 10000, 12000)};
}"""


def access_url(platform, name: str, index: bool = False) -> str:
    """The signed URL DRS hands out for a demo file (or its index)."""
    row = platform.rows[name]
    object_id = row.indexObjectId if index else row.objectId
    return drs_access_url(platform.url, object_id, platform.reader)


def requests_logged(platform, method: str) -> list[dict]:
    lines = (platform.data_dir / "server.log").read_text().splitlines()
    records = [json.loads(x) for x in lines if x.startswith("{")]
    return [r for r in records if r.get("method") == method]


def test_igv_in_a_page_of_an_allowed_origin_reads_htsget_and_a_signed_url(browser, platform, sites):
    allowed, _ = sites
    visit = Visit(browser, allowed.url)
    try:
        visit.page.goto("/index.html")
        reference = {
            "id": "demo",
            "fastaURL": access_url(platform, "reference.fa"),
            "indexURL": access_url(platform, "reference.fa", index=True),
        }
        bam = {
            "sourceType": "htsget",
            "url": f"{platform.url}/htsget/reads/{platform.rows['DONOR-1-N.bam'].objectId}",
            "oauthToken": platform.reader,  # its own bearer token: cookies never cross
        }
        vcf = {
            "url": access_url(platform, "DONOR-1-N.vcf.gz"),
            "indexURL": access_url(platform, "DONOR-1-N.vcf.gz", index=True),
        }
        counts = visit.page.evaluate(ORIGIN_JS, [reference, bam, vcf])
        files = platform.files
        assert counts == {
            "reads": samtools_count(files / "DONOR-1-N.bam", "chr1:10001-12000"),
            "variants": bcftools_count(files / "DONOR-1-N.vcf.gz", "chr1:10001-12000"),
        }
        visit.page.screenshot(path=ARTIFACTS / "viewer-other-origin.png")
        visit.clean()
        # the ticket (Authorization) needed a preflight: answered 204, with no token
        preflights = [r for r in requests_logged(platform, "OPTIONS") if "/htsget/" in r["path"]]
        assert preflights and {r["status"] for r in preflights} == {204}
        assert all(r["principal"] is None for r in preflights)
    finally:
        visit.close()


FETCH_ALL_JS = """async (urls) => {
  const out = {};
  for (const [what, [url, headers]] of Object.entries(urls)) {
    try {
      const response = await fetch(url, {headers});
      out[what] = 'read ' + response.status + ' ' + (await response.text()).length;
    } catch (error) {
      out[what] = error.name;
    }
  }
  return out;
}"""


@pytest.mark.parametrize("origin", ["allowed", "other"])
def test_a_page_of_an_origin_outside_the_list_cannot_read_anything(
    browser, platform, sites, origin
):
    site = dict(zip(("allowed", "other"), sites))[origin]
    bam = platform.rows["DONOR-1-N.bam"].objectId
    token = {"Authorization": f"Bearer {platform.reader}"}
    urls = {
        "ticket": (f"{platform.url}/htsget/reads/{bam}?referenceName=chr1&start=0&end=999", token),
        "drs": (f"{platform.url}/ga4gh/drs/v1/objects/{bam}/access/https", token),
        "song": (f"{platform.url}/entities/{bam}", {}),
        "signed url": (access_url(platform, "DONOR-1-N.bam"), {"Range": "bytes=0-99"}),
    }
    visit = Visit(browser, site.url)
    try:
        visit.page.goto("/index.html")
        results = visit.page.evaluate(FETCH_ALL_JS, urls)
        if origin == "allowed":  # the same calls from the listed origin read every answer
            assert all(r.startswith(("read 200", "read 206")) for r in results.values()), results
        else:
            assert results == dict.fromkeys(urls, "TypeError"), results
    finally:
        visit.close()
