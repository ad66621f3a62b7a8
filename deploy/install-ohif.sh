#!/usr/bin/env bash
# Install-time fetch of OHIF's prebuilt viewer (npm package @ohif/app, its dist/) for the OHIF
# check: OHIF opens our studies over our own /dicomweb/ (tests/browser/test_ohif.py, docs/ohif.md).
# Idempotent: fetches nothing when this version is already installed (the configuration is written
# again). Nothing is downloaded at run time; the served viewer reads only files from this folder
# and data from our own server.
#
# Target: $ARTISCAN_OHIF_DIR (default var/ohif, ignored by git):
#   var/ohif/node_modules/@ohif/app/dist/   the prebuilt viewer, rebased to be served at /ohif/
#   var/ohif/node_modules/@ohif/app/dist/app-config.js   our configuration (DICOMweb = /dicomweb)
#
# Why `npm pack` and not `npm install`: `npm install @ohif/app` resolves the package's declared
# dependencies (the @ohif/* sources, React, ...), which the prebuilt dist/ does not need, and one
# of them (@ohif/i18n at the same version) is missing from our package registry, so the install
# stops with ETARGET. `npm pack` fetches the one tarball with npm's ordinary client.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="3.13.2"
dest="${ARTISCAN_OHIF_DIR:-$root/var/ohif}"
app="$dest/node_modules/@ohif/app"
marker="$app/.artiscan-installed-$version"
# Installed already: only our configuration below is written again (it may have changed).
if [ ! -f "$marker" ]; then
if ! command -v npm >/dev/null; then
    echo "install-ohif: npm not found; the OHIF check (tests/browser/test_ohif.py) needs it" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-ohif: fetching @ohif/app@$version (about 50 MB) ..."
(cd "$tmp" && npm pack --silent --no-audit --no-fund "@ohif/app@$version" >/dev/null)
rm -rf "$app"
mkdir -p "$app"
tar -xzf "$tmp/ohif-app-$version.tgz" -C "$app" --strip-components=1

# The prebuilt viewer expects to be served at "/": rebase it at "/ohif/" (index.html's absolute
# URLs, webpack's public path in every bundle, absolute url() in the CSS). Each replacement is
# counted, so a new OHIF build that changes these strings fails here instead of half-working.
python3 - "$app/dist" <<'PY'
import pathlib
import re
import sys

dist = pathlib.Path(sys.argv[1])
index = dist / "index.html"
html = index.read_text()
html, n_public = re.subn(r'window\.PUBLIC_URL="/"', 'window.PUBLIC_URL="/ohif/"', html)
html, n_urls = re.subn(r'(href|src)="/(?!/)', r'\1="/ohif/', html)
if n_public < 1 or n_urls < 3:
    sys.exit(f"install-ohif: index.html not as expected ({n_public} PUBLIC_URL, {n_urls} URLs)")
index.write_text(html)
bundles = 0
for js in dist.rglob("*.js"):
    text = js.read_text(errors="surrogateescape")
    new = text.replace('__webpack_require__.p = "/";', '__webpack_require__.p = "/ohif/";')
    if new != text:
        bundles += 1
        js.write_text(new, errors="surrogateescape")
if bundles == 0:
    sys.exit("install-ohif: no bundle sets webpack's public path to '/'")
for css in dist.glob("*.css"):
    text = css.read_text(errors="surrogateescape")
    css.write_text(re.sub(r"url\(/(?!/)", "url(/ohif/", text), errors="surrogateescape")
print(f"install-ohif: rebased index.html and {bundles} bundles at /ohif/")
PY
touch "$marker"
fi

# Our configuration: one DICOMweb data source, our /dicomweb on the same origin (the session
# cookie authenticates every request), studies listed by QIDO, images by WADO-RS frames.
cat > "$app/dist/app-config.js" <<'JS'
/** ArtiScan: OHIF over our own DICOMweb, same origin (written by deploy/install-ohif.sh). */
window.config = {
  name: 'artiscan',
  routerBasename: '/ohif',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'artiscan',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'artiscan',
      configuration: {
        friendlyName: 'ArtiScan DICOMweb',
        name: 'artiscan',
        wadoUriRoot: window.location.origin + '/dicomweb',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        omitQuotationForMultipartRequest: true,
        requestOptions: { requestCredentials: 'same-origin' },
      },
    },
  ],
};
JS
echo "install-ohif: OHIF $version in $app/dist (served at /ohif/ when enabled; see docs/ohif.md)"
