#!/usr/bin/env bash
# Admin API under load while calls stream prompts: requests per second for
# `GET /api/v1/users/{ext}` and for `POST /api/v1/users/{ext}/passcode` (argon2-bound), and
# what they do to the RTP of CALLS concurrent calls.
#
#   tests/load/admin-http.sh [CALLS] [SECONDS]        (default: 100 10)
#
# Starts the release build of `vportal serve` pinned to CPU 1; on CPU 0, the load caller
# (benches/tools/load_caller.rs) holds CALLS calls and measures their RTP while `wrk` (Debian
# package `wrk`) sends requests over 8 connections. Three rounds: RTP alone, RTP + GET,
# RTP + POST. Prints wrk's figures and the RTP packet-interval percentiles per round.
# Loopback only; bounded in count and time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
calls="${1:-100}"
seconds="${2:-10}"
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }
build_release load_caller

work_dir
token=$("$vportal" init --token-name load 2>init.err | grep -o 'vpt_[0-9a-f]*')
printf 48826 | "$vportal" user add 1001 --passcode-stdin >/dev/null
cat >post.lua <<'LUA'
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
LUA
RUST_LOG=warn,vportal::admin=info,vportal::server=info "${guard[@]}" taskset -c 1 "$vportal" serve \
  --sip 127.0.0.1:0 --admin 127.0.0.1:0 --rtp-ports 16000-19998 --prompts "$root/prompts" \
  >serve.out 2>serve.log 9>&- &
pid=$!
sip=$(listening sip)
admin=$(listening admin)
echo "vportal sip=$sip admin=$admin (pid $pid, CPU 1); $calls calls and wrk on CPU 0"

round() {
  local name="$1"; shift
  echo "== $name"
  helper taskset -c 0 timeout $((seconds + 90)) "$examples/load_caller" \
    --server "$sip" --calls "$calls" --rate 300 --settle 2 --measure "$seconds" --pid "$pid" \
    >caller.out
  local caller=$helper
  nap 1
  if [ $# -gt 0 ]; then
    helper taskset -c 0 timeout $((seconds + 30)) wrk -t1 -c8 -d "$((seconds + 3))s" \
      -H "Authorization: Bearer $token" "$@" >wrk.out
    wait "$helper"
    sed -n 's/^/   /; /Latency\|Requests\/sec\|requests in\|Non-2xx/p' wrk.out
  fi
  wait "$caller"
  server_alive "$name"
  grep -E 'streams|intervals|max gap|server CPU|lost' caller.out | sed 's/^/   /'
  nap 3
}
round "RTP only"
round "RTP + GET /api/v1/users/1001" "http://$admin/api/v1/users/1001"
round "RTP + POST /api/v1/users/1001/passcode (argon2)" -s post.lua "http://$admin/api/v1/users/1001/passcode"
