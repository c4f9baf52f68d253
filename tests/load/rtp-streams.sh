#!/usr/bin/env bash
# Media load: N concurrent calls streaming prompts, measured at the receiving end.
#
#   tests/load/rtp-streams.sh [CALLS ...]          (default: 1000 3000)
#
# Starts the release build of `vportal serve` pinned to CPU 1 and the load caller
# (benches/tools/load_caller.rs) pinned to CPU 0. For each CALLS it sets up that many calls at
# 300 calls/s, lets them settle, measures 10 s of RTP, hangs up, and prints: the per-stream
# largest inter-packet gap (p50/p95/max over the streams), RFC 3550 interarrival jitter,
# loss, the server's CPU use and its resident memory per call. Loopback only; bounded in
# count and time.
# RTPRIO=N runs the server's media thread at SCHED_FIFO priority N (root or CAP_SYS_NICE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 3000)
build_release load_caller

work_dir
for calls in "${counts[@]}"; do
  # A fresh server (and directory) for each count.
  mkdir "$work/$calls" && cd "$work/$calls"
  media_config
  RUST_LOG=warn,vportal::server=info "${guard[@]}" taskset -c 1 "$vportal" serve --config vportal.toml --no-admin \
    --sip 127.0.0.1:0 --rtp-ports 10000-30000 --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
  pid=$!
  addr=$(listening sip)
  echo "== $calls calls (vportal $addr on CPU 1, load caller on CPU 0)"
  helper taskset -c 0 timeout 180 "$examples/load_caller" --server "$addr" \
    --calls "$calls" --rate 300 --settle 3 --measure 10 --pid "$pid" >caller.out
  wait "$helper"
  sed 's/^/   /' caller.out
  sleep 1
  server_alive "$calls calls (after the load caller)"
  stop_server
done
