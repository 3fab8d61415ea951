#!/usr/bin/env bash
# Installs the external programs the test suite drives for real (Debian packages only); a no-op when
# they are all on PATH:
#   prometheus, promtool      scraping and rule tests         (prometheus)
#   prometheus-alertmanager   alert delivery tests            (prometheus-alertmanager)
#   systemd-analyze           unit verify + security score    (systemd)
#   strace, setpriv           the unit's sandbox test         (strace, util-linux)
#   kubectl                   kustomize build of the manifests (kubernetes-client, when no kubectl exists)
#   initdb, pg_ctl, psql      a throwaway PostgreSQL for the Flujo-on-Postgres tests (postgresql)
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
# Debian keeps the server binaries off PATH (/usr/lib/postgresql/<major>/bin): look there, as the tests do.
pg_bindir() {
  local found
  if command -v pg_config >/dev/null && found=$(pg_config --bindir 2>/dev/null) && [ -x "$found/initdb" ]; then
    echo "$found"; return 0
  fi
  for found in /usr/lib/postgresql/*/bin; do
    [ -x "$found/initdb" ] && { echo "$found"; return 0; }
  done
  return 1
}
pg_bindir >/dev/null || need+=(postgresql)
# The server runs as the OS user postgres (initdb refuses root), started through runuser.
want runuser util-linux
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
