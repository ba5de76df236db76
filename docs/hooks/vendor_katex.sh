#!/usr/bin/env bash
# Re-vendors KaTeX into docs/assets/katex from the npm registry (run by hand, not by the build).
# Usage: bash docs/hooks/vendor_katex.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/../.."
version="${1:-0.19.1}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "katex@$version" >/dev/null && tar xzf katex-*.tgz)
dst=docs/assets/katex
rm -rf "$dst" && mkdir -p "$dst/fonts"
cp "$tmp/package/dist/katex.min.js" "$tmp/package/LICENSE" "$dst/"
cp "$tmp/package/dist/fonts/"*.woff2 "$dst/fonts/"
# Keep only the woff2 font sources (every browser that runs the site reads woff2).
sed -E 's/,url\(fonts\/[A-Za-z0-9_-]+\.woff\) format\("woff"\),url\(fonts\/[A-Za-z0-9_-]+\.ttf\) format\("truetype"\)//g' \
  "$tmp/package/dist/katex.min.css" >"$dst/katex.min.css"
printf 'KaTeX %s (MIT, see LICENSE), vendored by docs/hooks/vendor_katex.sh from the npm package.\n' \
  "$version" >"$dst/SOURCE.txt"
echo "vendored KaTeX $version into $dst"
