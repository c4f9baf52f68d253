#!/usr/bin/env bash
# SIP OPTIONS load: how many OPTIONS → 200 per second vportal answers with zero failures,
# and whether its memory stays flat.
#
#   tests/load/sip-options.sh [RATE ...]        (default: 20000 40000 50000)
#
# Starts the release build of `vportal serve` pinned to CPU 1 and SIPp pinned to CPU 0
# (the fair split on a 2-core machine), sends RATE requests per second for 10 seconds at
# each rate, and prints the successful and failed counts, SIPp's measured rate and the
# server's resident memory after each step. Loopback only; every step is bounded in count
# and time. Needs SIPp (package sip-tester) and taskset (util-linux).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(20000 40000 50000)
command -v sipp >/dev/null || { echo "install SIPp (apt-get install sip-tester)" >&2; exit 2; }
# shellcheck disable=SC2119 # no examples
build_release

work_dir
RUST_LOG=warn,vportal::server=info "${guard[@]}" taskset -c 1 "$vportal" serve --no-admin --sip 127.0.0.1:0 \
  --rtp-ports 21000-21998 --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
pid=$!
addr=$(listening sip)
echo "vportal $addr (pid $pid, CPU 1); SIPp on CPU 0"
rss() { awk '/VmRSS/{print $2" kB"}' "/proc/$pid/status"; }
echo "resident memory at start: $(rss)"
printf '%8s %10s %8s %12s %12s\n' rate successful failed measured rss
missing=0
for rate in "${rates[@]}"; do
  server_alive "rate $rate (before SIPp)"
  out="sipp-$rate.txt"
  ports_free "rate $rate" 11104 11104
  helper taskset -c 0 timeout 120 sipp "$addr" -sf "$root/tests/sipp/options.xml" -s 8500 -i 127.0.0.1 \
    -p 11104 -nostdin -r "$rate" -m $((rate * 10)) -timeout 60s -timeout_error -max_retrans 5 \
    -buff_size 8388608 >"$out" 2>&1
  wait "$helper" || true
  server_alive "rate $rate (SIPp run)"
  ok=$(sipp_count "$out" 'Successful call'); failed=$(sipp_count "$out" 'Failed call')
  measured=$({ grep -a 'Call Rate' "$out" || true; } | tail -n 1 | awk -F'|' '{gsub(/^ +| +$/,"",$3); print $3}')
  if [ -z "$ok" ] || [ -z "$failed" ]; then
    sipp_missing "rate $rate" "$out"
    missing=$((missing + 1)); ok=${ok:--}; failed=${failed:--}; measured=${measured:--}
  fi
  printf '%8s %10s %8s %12s %12s\n' "$rate" "$ok" "$failed" "$measured" "$(rss)"
done
if [ "$missing" -gt 0 ]; then
  fail "$missing rate(s)" "SIPp printed no statistics (see above)"
fi
