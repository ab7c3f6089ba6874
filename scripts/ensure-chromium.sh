#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard browser test and PNG reports (kaleido), when it is
# missing and this is a root shell with apt-get; otherwise does nothing (those tests then skip
# with the reason). Quiet and idempotent: a second run only checks the path.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: installing Debian's chromium" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "ensure-chromium: could not install chromium; the browser and PNG tests will skip" >&2
else
  echo "ensure-chromium: no /usr/bin/chromium and not root with apt-get; the browser and PNG tests will skip" >&2
fi
exit 0
