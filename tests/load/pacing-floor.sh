#!/usr/bin/env bash
# The floor under the media figures: a bare pacer (benches/tools/pacing_floor.rs) sending N RTP
# streams from CPU 1 to a busy-polling receiver on CPU 0, measured like
# tests/load/rtp-streams.sh measures vportal. Whatever gaps it shows, this machine adds to
# any program's.
#
#   tests/load/pacing-floor.sh [STREAMS ...]          (default: 1000 3000)
#
# With RTPRIO=N (1–99; root or CAP_SYS_NICE) the pacer runs SCHED_FIFO at priority N, as
# vportal's media thread does with `rtp.realtime_priority = N`.
#
# Loopback only; each run lasts 13 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 3000)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
build_release pacing_floor
bin="$examples/pacing_floor"
port=11000
# The receiver's and sender's output; on exit (Ctrl-C included) both are stopped.
work_dir
fifo=()
if [ "${RTPRIO:-0}" -gt 0 ]; then fifo=(chrt -f "$RTPRIO"); fi
for streams in "${counts[@]}"; do
  echo "== $streams streams (bare pacer on CPU 1, receiver on CPU 0)"
  ports_free "$streams streams" "$port" "$port"
  helper taskset -c 0 timeout 60 "$bin" receive --port "$port" --seconds 10 >receiver.out
  receiver=$helper
  sleep 0.3
  helper taskset -c 1 "${fifo[@]}" timeout 60 "$bin" send --port "$port" --streams "$streams" --seconds 10 >sender.out
  wait "$helper"
  sed 's/^/   /' sender.out
  wait "$receiver"
  sed 's/^/   /' receiver.out
done
