#!/usr/bin/env bash
# Builds Jaeger (v2, the OpenTelemetry-collector based all-in-one) into
# bin/jaeger from its own module here: it does not compile beside Flotilla's
# OpenTelemetry version. Incremental: when go.mod, go.sum and this script are
# unchanged and the binary exists, it does nothing. Module builds serve no UI
# (a placeholder page); the query API is all `make up` and the tests use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${JAEGER_BIN:-$root/bin/jaeger}"
stampfile="$(dirname "$out")/.$(basename "$out").stamp"

stamp="$(cat "$here/go.sum" "$here/go.mod" "$here/build.sh" | sha256sum | cut -d' ' -f1)"
if [ -x "$out" ] && [ -f "$stampfile" ] && [ "$(cat "$stampfile")" = "$stamp" ]; then
  echo "jaeger: up to date in $out"
  exit 0
fi

mkdir -p "$(dirname "$out")"
rm -f "$stampfile"
cd "$here"
t0=$SECONDS
echo "jaeger: building $(go list -m -f '{{.Path}} {{.Version}}' github.com/jaegertracing/jaeger) into $out (cold: ~9 min)"
# Into a temporary name first: an interrupted build leaves no half binary.
go build -ldflags "-s -w" -o "$out.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv -f "$out.tmp" "$out"
echo "jaeger: built in $((SECONDS - t0))s"
echo "$stamp" > "$stampfile"
