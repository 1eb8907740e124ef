"""How the node serves an OHIF build at /ohif/ (``pair.web.ohif``), on a small stand-in build
shaped like OHIF's npm ``dist/`` (the real build runs in tests/web/test_ohif_browser.py):
site-root paths moved under /ohif/, the generated same-origin app-config.js, the viewer's own
CSP with the inline scripts' hashes, SPA pages, and refusals (not enabled, missing asset,
a path outside the build, a signed-out browser)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from fastapi.testclient import TestClient

from pair.core.config import get_settings
from pair.core.node import open_node
from pair.web.headers import CSP
from tests.conftest import admin_test_client

DOCUMENTED = Path(__file__).resolve().parents[2] / "docs" / "ohif" / "app-config.same-origin.js"
INLINE = 'console.time("x"),window.PUBLIC_URL="/"'
INDEX = (
    f'<html><head><script>{INLINE}</script><link rel="manifest" href="/manifest.json">'
    '<script defer src="/app.bundle.1.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    '</head><body><div id="root"></div></body></html>'
)


def _build(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "app.bundle.1.js").write_text('(() => {\n__webpack_require__.p = "/";\n})();\n')
    (dist / "12.bundle.2.js").write_text("console.log('chunk')")
    (dist / "app.bundle.css").write_text("@font-face{src:url(/a1.woff2)}")
    (dist / "manifest.json").write_text('{"icons": [{"src": "/assets/icon.png"}]}')
    (dist / "assets" / "icon.png").write_bytes(b"\x89PNG")
    (dist / "x.wasm").write_bytes(b"\0asm")
    (root / "secret.txt").write_text("outside the build")
    return dist


def _client(tmp_path: Path, enabled: bool = True) -> tuple[TestClient, dict[str, dict[str, str]]]:
    extra = {"ohif_dir": _build(tmp_path)} if enabled else {}
    node = open_node(settings=get_settings(tmp_path / "node", **extra))
    return admin_test_client(node)


def test_files_are_moved_under_ohif_and_the_config_reads_this_nodes_dicomweb(
    tmp_path: Path,
) -> None:
    client, headers = _client(tmp_path)
    h = headers["dm"]
    index = client.get("/ohif/", headers=h)
    assert index.status_code == 200
    assert 'window.PUBLIC_URL="/ohif/"' in index.text
    assert (
        'src="/ohif/app.bundle.1.js"' in index.text and 'href="/ohif/manifest.json"' in index.text
    )
    # a viewer page (OHIF's own router) is the same page
    assert client.get("/ohif/viewer", headers=h, params={"StudyInstanceUIDs": "1.2"}).text == (
        index.text
    )
    runtime = client.get("/ohif/app.bundle.1.js", headers=h)
    assert '__webpack_require__.p = "/ohif/";' in runtime.text
    assert runtime.headers["content-type"].startswith("text/javascript")
    assert client.get("/ohif/12.bundle.2.js", headers=h).text == "console.log('chunk')"
    assert (
        client.get("/ohif/app.bundle.css", headers=h).text == "@font-face{src:url(/ohif/a1.woff2)}"
    )
    assert "/ohif/assets/icon.png" in client.get("/ohif/manifest.json", headers=h).text
    assert client.get("/ohif/x.wasm", headers=h).headers["content-type"] == "application/wasm"
    config = client.get("/ohif/app-config.js", headers=h).text
    assert config == DOCUMENTED.read_text()  # docs/viewers.md shows what the node sends
    settings = json.loads(config.split("window.config = ", 1)[1].rstrip().rstrip(";"))
    assert settings["routerBasename"] == "/ohif"
    (source,) = settings["dataSources"]
    assert source["configuration"]["qidoRoot"] == source["configuration"]["wadoRoot"] == "/dicomweb"
    assert client.get("/ohif", headers=h, follow_redirects=False).headers["location"] == "/ohif/"


def test_the_viewer_has_its_own_csp_and_the_portal_keeps_the_strict_one(tmp_path: Path) -> None:
    client, headers = _client(tmp_path)
    policy = client.get("/ohif/", headers=headers["dm"]).headers["content-security-policy"]
    rewritten = INLINE.replace('"/"', '"/ohif/"')
    digest = base64.b64encode(hashlib.sha256(rewritten.encode()).digest()).decode()
    script_src = policy.split("script-src ", 1)[1].split(";", 1)[0].split()
    assert script_src == ["'self'", "'wasm-unsafe-eval'", f"'sha256-{digest}'"]
    assert "worker-src 'self' blob:" in policy and "connect-src 'self'" in policy
    assert client.get("/healthz").headers["content-security-policy"] == CSP
    assert client.get("/login").headers["content-security-policy"] == CSP


def test_refusals(tmp_path: Path) -> None:
    client, headers = _client(tmp_path)
    h = headers["dm"]
    missing = client.get("/ohif/no-such.bundle.js", headers=h)
    assert missing.status_code == 404 and "no-such.bundle.js" in missing.json()["message"]
    for outside in ("../secret.txt", "%2e%2e/secret.txt", "/etc/passwd.txt"):
        answer = client.get("/ohif/" + outside, headers=h)
        assert answer.status_code == 404 and "outside the build" not in answer.text
    assert client.get("/ohif/").status_code == 401
    signed_out = client.get("/ohif/viewer", headers={"accept": "text/html"}, follow_redirects=False)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/login?next=/ohif/viewer"
    # the node operator's 403 and every role's decision: tests/security/test_route_matrix.py


def test_not_enabled_says_so(tmp_path: Path) -> None:
    client, headers = _client(tmp_path, enabled=False)
    answer = client.get("/ohif/", headers=headers["dm"])
    assert answer.status_code == 404
    assert "PAIR_OHIF_DIR" in answer.json()["message"]
