# Helpers of the demos (hack/demo.sh, hack/demo-airgap.sh): print each step
# as the product page does, and check each output against it.
# shellcheck shell=bash
bold= dim= off=
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true); dim=$(tput dim 2>/dev/null || true); off=$(tput sgr0 2>/dev/null || true); fi

step() { echo; echo "${bold}== $*${off}"; }
fail() { echo "${bold}DEMO FAILED:${off} $*" >&2; exit 1; }
# show runs a command as the page shows it ($ cmd, then its output) and
# keeps the output (stdout and stderr) in $out.
show() {
  echo "\$ $*"
  out=$("$@" 2>&1); code=$?
  printf '%s\n' "$out"
}
# expect checks $out line by line against extended regular expressions.
expect() {
  local i=0 line
  local n; n=$(printf '%s\n' "$out" | wc -l)
  [ "$n" -eq "$#" ] || fail "expected $# lines, got $n:"$'\n'"$out"
  for re in "$@"; do
    i=$((i + 1))
    line=$(printf '%s\n' "$out" | sed -n "${i}p")
    [[ "$line" =~ ^${re}$ ]] || fail "line $i is"$'\n'"  $line"$'\n'"the page shows"$'\n'"  $re"
  done
}
# until_ok retries a command quietly until its output matches, for up to $1 seconds.
until_ok() {
  local secs=$1 re=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@" 2>&1 | grep -Eq "$re"; then return 0; fi
    sleep 0.2
  done
  return 1
}

