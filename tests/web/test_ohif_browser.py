"""The OHIF Viewer (pinned npm build, ``scripts/fetch_ohif.sh``) on a live node, in Chromium
(issue 15, "Interoperability with OHIF").

Both supported deployments (docs/viewers.md): (a) same origin, the node serving the build at
``/ohif/`` (``PAIR_OHIF_DIR``) with the portal's session cookie; (b) cross-origin, the same build
on another loopback origin, the node listing it in ``PAIR_CORS_ORIGINS`` and the viewer sending
a user's bearer token. Each time: the study list shows the stored CT study, the study opens in
OHIF's viewer, the CT slice is drawn (the viewport canvas holds an image), no request fails and
no DICOMweb answer is an error; under ``/ohif/`` the viewer runs without CSP violations.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, expect

from pair.web.sessions import COOKIE
from tests.conftest import TEST_DATA, LiveNode, free_port
from tests.web import test_browser as portal

pytestmark = pytest.mark.integration
browser = portal.browser

ROOT = Path(__file__).resolve().parents[2]
FETCH = ROOT / "scripts" / "fetch_ohif.sh"
OHIF_VERSION = re.search(r'OHIF_VERSION="([^"]+)"', FETCH.read_text()).group(1)  # type: ignore[union-attr]
DIST = ROOT / ".cache" / "ohif" / OHIF_VERSION / "dist"
CT_FILE = TEST_DATA / "dicom" / "pydicom_CT_small.dcm"
USER = "rad_a"
# the viewport's 2D canvas holds more than a few lit pixels once the CT slice is drawn
DRAWN = """() => {
  const c = document.querySelector('canvas.cornerstone-canvas');
  if (!c || !c.width || !c.height) return false;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
  return lit > 500;
}"""


def ohif_dist() -> Path:
    if not (DIST / "index.html").is_file():
        pytest.fail(
            f"The OHIF {OHIF_VERSION} build is missing at {DIST}: run `make ohif` "
            "(scripts/fetch_ohif.sh, needs npm and the npm registry); `make test` runs it."
        )
    return DIST


@dataclass
class Traffic:
    """What the browser saw go wrong: failed requests, DICOMweb errors, CSP violations."""

    failed: list[str] = field(default_factory=list)
    dicomweb_errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    dicomweb_ok: int = 0

    def watch(self, page: Page) -> None:
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("console", self._console)

    def _failed(self, request: Request) -> None:
        self.failed.append(f"{request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if "/dicomweb" not in response.url:
            return
        if response.status >= 400:
            self.dicomweb_errors.append(f"{response.status} {response.url}")
        else:
            self.dicomweb_ok += 1

    def _console(self, msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text:
            self.csp.append(msg.text)


def _live(tmp_path: Path, database_url: str, **env: str) -> LiveNode:
    server = LiveNode(tmp_path / "live", database_url)
    server.env_overrides.update(env)
    server.provision()
    server.start()
    return server


def _store_ct(node: LiveNode) -> dict[str, str]:
    """The vendored real CT slice, sent with STOW-RS; what the node keeps (de-identified)."""
    dw = DICOMwebClient(url=node.base_url + "/dicomweb", headers=node.headers())
    assert "FailedSOPSequence" not in dw.store_instances([pydicom.dcmread(CT_FILE)])
    (study,) = [pydicom.Dataset.from_json(s) for s in dw.search_for_studies()]
    return {"study": study.StudyInstanceUID, "patient_id": str(study.PatientID)}


def _open_and_check(
    page: Page, stored: dict[str, str], traffic: Traffic, shots: bool = False
) -> None:
    row = page.get_by_text(stored["patient_id"], exact=True)
    expect(row).to_be_visible(timeout=60_000)  # the study list, from QIDO-RS
    portal.shot(page, "ohif-study-list", shots)
    row.click()  # expands the study: its series and the viewer modes
    page.get_by_role("button", name="Basic Viewer").click()
    expect(page).to_have_url(
        re.compile(r"/viewer\?StudyInstanceUIDs=" + re.escape(stored["study"]))
    )
    page.wait_for_function(DRAWN, timeout=90_000)  # the CT slice drawn in the viewport
    page.wait_for_load_state("networkidle")
    portal.shot(page, "ohif-viewer", shots)
    assert traffic.failed == []
    assert traffic.dicomweb_errors == []
    assert traffic.dicomweb_ok > 0


@pytest.fixture
def same_origin(tmp_path: Path, database_url: str) -> Iterator[LiveNode]:
    server = _live(tmp_path, database_url, PAIR_OHIF_DIR=str(ohif_dist()))
    yield server
    server.stop()


def test_ohif_served_by_the_node_same_origin(
    same_origin: LiveNode, browser: Browser, database_url: str
) -> None:
    node = same_origin
    stored = _store_ct(node)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    traffic = Traffic()
    traffic.watch(page)
    # signed out: the viewer sends the browser to the portal's sign-in, and back after it
    page.goto(node.base_url + "/ohif/")
    expect(page.get_by_role("heading", name="Sign in to PAIR")).to_be_visible()
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill("password-" + USER)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(node.base_url + "/ohif/")
    # docs/screenshots/ohif-*.png from the SQLite run (PAIR_SCREENSHOTS=1)
    _open_and_check(page, stored, traffic, shots=database_url.startswith("sqlite"))
    assert traffic.csp == []
    # the node's answers under /ohif/ carry the viewer's policy; the portal keeps its own
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    viewer = httpx.get(node.base_url + "/ohif/", cookies=cookies)
    policy = viewer.headers["content-security-policy"]
    assert "'wasm-unsafe-eval'" in policy and "'unsafe-eval'" not in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    home = httpx.get(node.base_url + "/", cookies=cookies)
    assert "wasm" not in home.headers["content-security-policy"]
    context.close()


# ---- cross-origin: the build on its own origin, CORS and a bearer token ----------------------


class _Static(SimpleHTTPRequestHandler):
    """OHIF's build as a plain static site (what a hospital's viewer server does): any path
    without a file is the single-page app's index.html; app-config.js is the one given."""

    config_js = b""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.config_js)))
            self.end_headers()
            self.wfile.write(self.config_js)
            return
        if not Path(self.translate_path(path)).exists() and not Path(path).suffix:
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def cross_origin_config(node_url: str) -> str:
    """The cross-origin app-config.js of docs/viewers.md, pointed at ``node_url``."""
    text = (ROOT / "docs" / "ohif" / "app-config.cross-origin.js").read_text()
    return text.replace("https://pair.hospital.example", node_url)


@pytest.fixture
def viewer_origin() -> Iterator[tuple[str, type[_Static]]]:
    handler = type("Handler", (_Static,), {})
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(ohif_dist())))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", handler
    httpd.shutdown()
    httpd.server_close()


def test_ohif_on_another_origin_with_cors_and_a_bearer_token(
    tmp_path: Path,
    database_url: str,
    browser: Browser,
    viewer_origin: tuple[str, type[_Static]],
) -> None:
    origin, handler = viewer_origin
    node = _live(tmp_path, database_url, PAIR_CORS_ORIGINS=origin)
    try:
        stored = _store_ct(node)
        handler.config_js = cross_origin_config(node.base_url).encode()
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        traffic = Traffic()
        traffic.watch(page)
        # the token arrives once in the URL; the config keeps it for the tab and drops it there
        page.goto(f"{origin}/?token={node.tokens[USER]}")
        _open_and_check(page, stored, traffic)
        assert "token=" not in page.url
        # nothing but the token: this browser never had a portal session
        assert COOKIE not in {c["name"] for c in context.cookies(node.base_url)}
        context.close()
    finally:
        node.stop()
