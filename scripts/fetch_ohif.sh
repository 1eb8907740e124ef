#!/usr/bin/env bash
# Fetch the pinned OHIF Viewer static build (npm package @ohif/app ships dist/) into
# .cache/ohif/<version>/dist, checking the tarball against the pinned sha512 integrity.
# The build is not committed (about 50 MB packed, 200 MB unpacked); `make test` runs this so the
# OHIF browser tests (tests/web/test_ohif_browser.py) have it. Needs npm and the npm registry.
# Usage: scripts/fetch_ohif.sh [target-folder]     (prints the dist folder)
set -euo pipefail
OHIF_VERSION="3.13.2"
OHIF_INTEGRITY="sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-$root/.cache/ohif}"
dest="$target/$OHIF_VERSION"
if [ -f "$dest/dist/index.html" ] && [ -f "$dest/.verified" ]; then
  echo "$dest/dist"
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed to fetch OHIF $OHIF_VERSION (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
tarball="$work/ohif-app-$OHIF_VERSION.tgz"
actual="sha512-$(python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1],"rb").read()).digest()).decode())' "$tarball")"
if [ "$actual" != "$OHIF_INTEGRITY" ]; then
  echo "OHIF tarball integrity mismatch: expected $OHIF_INTEGRITY, got $actual" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$tarball" -C "$dest" --strip-components=1 package/dist package/LICENSE package/package.json
echo "$OHIF_INTEGRITY" >"$dest/.verified"
echo "$dest/dist"
