#!/usr/bin/env bash
# make up: start the whole product in the background (bin/flotilla-dev as
# supervisor), return once both clusters are accepted, joined and available.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.flotilla
mkdir -p "$dir"
pidfile="$dir/supervisor.pid"

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ -f "$dir/ready" ]; then
  echo "Flotilla is already up (supervisor pid $(cat "$pidfile")). source $dir/env"
  # The supervisor notes every process that died since, with the end of its log.
  if grep -q 'process died' "$dir/supervisor.log" 2>/dev/null; then
    echo "but some processes died (make down && make up restarts everything):" >&2
    sed -n '/process died/,$p' "$dir/supervisor.log" >&2
    exit 1
  fi
  exit 0
fi
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "a previous 'make up' is still starting or stuck: run 'make down' first" >&2
  exit 1
fi
rm -f "$dir/ready" "$dir/env"
log="$dir/supervisor.log"
# Replicated services run on a replicated NATS: three nodes, R3 streams.
nats_nodes=${NATS_NODES:-1}
if [ -z "${NATS_NODES:-}" ] && [ "${REPLICAS:-1}" -gt 1 ]; then nats_nodes=3; fi
setsid nohup bin/flotilla-dev --dir "$dir" --bin bin --testbed-bin bin/testbed --replicas "${REPLICAS:-1}" --nats-nodes "$nats_nodes" >"$log" 2>&1 < /dev/null &
echo $! > "$pidfile"
pid=$(cat "$pidfile")
for _ in $(seq 1 1800); do
  if [ -f "$dir/ready" ]; then
    cat "$log"
    echo
    echo "Flotilla is up. In your shell:  source $dir/env"
    echo "  kubectl get managedclusters        # the hub's clusters"
    echo "  make demo                          # the product page's scenario"
    echo "  make down                          # stop everything"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "make up failed; the supervisor's log ($log):" >&2
    tail -n 40 "$log" >&2
    for f in "$dir"/logs/*.log; do
      [ "$f" = "$log" ] && continue
      # (Jaeger warns at every start that a module build has no UI: not a failure.)
      if grep -v 'ui assets not embedded' "$f" 2>/dev/null | grep -qiE 'error|fatal|panic'; then echo "--- $f" >&2; tail -n 10 "$f" >&2; fi
    done
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.1
done
echo "make up: not ready after 180s; see $log" >&2
exit 1
