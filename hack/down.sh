#!/usr/bin/env bash
# make down: stop every process `make up` started, by PID, and leave none.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=.flotilla
pidfile="$dir/supervisor.pid"
pids=""
[ -f "$dir/pids" ] && pids=$(cat "$dir/pids")
if [ -f "$pidfile" ]; then
  sup=$(cat "$pidfile")
  if kill -0 "$sup" 2>/dev/null; then
    kill -TERM "$sup"
    for _ in $(seq 1 300); do kill -0 "$sup" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$sup" 2>/dev/null || true
  fi
  pids="$pids $sup"
fi
left=0
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null; left=$((left + 1)); fi
done
rm -f "$pidfile" "$dir/pids" "$dir/ready"
echo "Flotilla is down${left:+ }$( [ "$left" -gt 0 ] && echo "($left stragglers killed)")"
