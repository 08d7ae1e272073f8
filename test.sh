#!/usr/bin/env bash
# Runs every test: the training project's pytest suite, then the .NET solution's xunit tests.
# Installs what the tests need first: Debian packages when apt is there, else pip.
set -euo pipefail
cd "$(dirname "$0")"

# librsvg2-bin: rsvg-convert, which renders the SVG emoji sets (training/igpt/emoji_svg.py)
# fonts-dejavu-core: the fonts scripts/ood_sets.py draws its out-of-distribution digits with
PY_DEBS=(python3-torch python3-onnx python3-numpy python3-pil python3-tqdm python3-pytest
         libopenblas0-pthread dataset-fashion-mnist librsvg2-bin fonts-dejavu-core)

install_python_side() {
  if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    local missing=()
    for p in "${PY_DEBS[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      echo "test.sh: installing ${missing[*]}"
      local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    PYTHON=/usr/bin/python3
  else
    PYTHON=${PYTHON:-python3}
    "$PYTHON" -m pip install -q -r training/requirements.txt
  fi
}

# The web page tests (tests/IGpt.Web.Tests) drive Debian's Chromium through Playwright; no browser is downloaded.
install_browser() {
  [ -x /usr/bin/chromium ] && return
  if command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing chromium"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: /usr/bin/chromium is missing and there is no apt-get: the web page tests will fail" >&2
  fi
}

install_python_side
install_browser
echo "== pytest (training/) with $PYTHON"
(cd training && "$PYTHON" -m pytest -q tests)

echo "== dotnet test (IGpt.Api.sln)"
# The console logger prints each failed test's message and stack (quiet alone prints only its name). A test that hangs
# (no suite takes a minute) stops its run after 5 minutes, named, instead of holding CI to its limit.
dotnet test IGpt.Api.sln -c Release --nologo -v quiet --logger "console;verbosity=minimal" \
  --blame-hang-timeout 5m --blame-hang-dump-type none
