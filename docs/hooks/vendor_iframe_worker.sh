#!/usr/bin/env bash
# Re-vendors the iframe-worker shim into docs/assets/iframe-worker from the npm registry (run by
# hand, not by the build). mkdocs-material's offline plugin needs it so that search runs when the
# built site is opened from disk (file:// pages cannot start Web Workers); without a local copy
# the plugin links https://unpkg.com/iframe-worker/shim, which a machine offline cannot load.
# Usage: bash docs/hooks/vendor_iframe_worker.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/../.."
version="${1:-1.0.4}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "iframe-worker@$version" >/dev/null && tar xzf iframe-worker-*.tgz)
dst=docs/assets/iframe-worker
rm -rf "$dst" && mkdir -p "$dst"
cp "$tmp/package/shim/index.js" "$dst/shim.js"
cp "$tmp/package/LICENSE" "$dst/"
printf 'iframe-worker %s (MIT, see LICENSE), vendored by docs/hooks/vendor_iframe_worker.sh from the npm package.\n' \
  "$version" >"$dst/SOURCE.txt"
echo "vendored iframe-worker $version into $dst"
