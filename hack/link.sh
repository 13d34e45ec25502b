#!/usr/bin/env bash
# make link-down / make link-up: cut or restore the link between the
# air-gapped site's NATS leaf node and the hub (`make up` runs it through
# a proxy in its supervisor), and wait until it is done.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.flotilla
want=${1:?usage: link.sh down|up}
pidfile="$dir/supervisor.pid"
if ! [ -f "$dir/ready" ] || ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
  echo "Flotilla is not up: make up first" >&2
  exit 1
fi
case "$want" in
  down) sig=USR1 ;;
  up) sig=USR2 ;;
  *) echo "usage: link.sh down|up" >&2; exit 2 ;;
esac
before=$(cat "$dir/link" 2>/dev/null || true)
kill -"$sig" "$(cat "$pidfile")"
for _ in $(seq 1 100); do
  now=$(cat "$dir/link" 2>/dev/null || true)
  if [ "${now%% *}" = "$want" ] && { [ "$now" != "$before" ] || [ "${before%% *}" = "$want" ]; }; then
    # shellcheck disable=SC1091
    site=$(. "$dir/env"; echo "$FLOTILLA_SITE")
    echo "the link from site $site to the hub is $want since ${now#* }"
    exit 0
  fi
  sleep 0.1
done
echo "the link did not go $want within 10s; see $dir/supervisor.log" >&2
exit 1
