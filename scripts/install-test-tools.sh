#!/usr/bin/env bash
# Installs the external programs the test suite drives for real (Debian packages only); a no-op when
# they are all on PATH:
#   prometheus, promtool      scraping and rule tests         (prometheus)
#   prometheus-alertmanager   alert delivery tests            (prometheus-alertmanager)
#   systemd-analyze           unit verify + security score    (systemd)
#   strace, setpriv           the unit's sandbox test         (strace, util-linux)
#   kubectl                   kustomize build of the manifests (kubernetes-client, when no kubectl exists)
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null || need+=("$2"); }
want prometheus prometheus
want promtool prometheus
want prometheus-alertmanager prometheus-alertmanager
want systemd-analyze systemd
want strace strace
want setpriv util-linux
want kubectl kubernetes-client
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install-test-tools: apt-get not found; install ${need[*]} yourself (tests needing them are skipped outside CI)" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
mapfile -t unique < <(printf '%s\n' "${need[@]}" | sort -u)
$sudo apt-get install -y -qq --no-install-recommends "${unique[@]}" >/dev/null
