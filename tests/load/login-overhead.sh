#!/usr/bin/env bash
# Login-call overhead: what a complete login call costs the server besides its argon2 check.
#
#   tests/load/login-overhead.sh [RATE] [RUNS]        (default: 65 3)
#
# Provisions 3,000 mailboxes (20000-22999, permanent passcode 48826) once. Then, RUNS times:
# starts the release build of `vportal serve` pinned to CPU 1, SIPp pinned to CPU 0 placing
# RATE login calls a second for 40 s (tests/load/login-info.xml, as login-calls.sh), and,
# 10 s in, samples the server for 12 s with `perf record` (2,000 Hz) and counts its thread
# switches (`perf stat -e context-switches --per-thread`). Prints per run: the samples in
# argon2 and outside it, the second as a share of the first (the overhead relative to the
# hash, which does not move with this virtual machine's speed the way milliseconds do), the
# same in ms per call, and the thread switches per call (runtime worker, media thread,
# hashing threads). RATE must be one the server sustains (login-calls.sh), or the samples
# measure a backlog. Needs SIPp (sip-tester), perf (linux-perf) and taskset. Loopback
# only; bounded in count and time.
# RTPRIO=N runs the server's media thread at SCHED_FIFO priority N (root or CAP_SYS_NICE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
rate="${1:-65}"
runs="${2:-3}"
for tool in sipp perf; do
  command -v "$tool" >/dev/null || { echo "install $tool (Debian: sip-tester, linux-perf)" >&2; exit 2; }
done
build_release

work_dir
"$vportal" init >/dev/null
provision 20000 3000
mkdir template && mv vportal.db vportal.pepper template/
{ echo SEQUENTIAL; for e in $(seq 20000 22999); do echo "$e" | sed 's/./&;/g'; done; } >mailboxes.csv
calls=$((rate * 40))
sampled=$((rate * 12))

for run in $(seq 1 "$runs"); do
  rm -f vportal.db* && cp template/vportal.db template/vportal.pepper .
  media_config
  RUST_LOG=warn,vportal::server=info,vportal::server::call=warn taskset -c 1 "$vportal" serve --config vportal.toml --no-admin --sip 127.0.0.1:0 --rtp-ports 34000-39998 \
    --prompts "$root/prompts" >serve.out 2>serve.log &
  pid=$!
  addr=$(listening sip)
  helper taskset -c 0 timeout 120 sipp "$addr" -sf "$here/login-info.xml" -inf mailboxes.csv -s 8500 \
    -i 127.0.0.1 -mp 40000 -nostdin -r "$rate" -m "$calls" -timeout 90s -timeout_error \
    -max_retrans 5 >sipp.txt 2>&1
  sipp_pid=$helper
  sleep 10 & wait $!
  helper perf stat -e context-switches --per-thread -p "$pid" -o switches.txt -- sleep 12
  stat_pid=$helper
  helper perf record -q -F 2000 -p "$pid" -o perf.data -- sleep 12 >/dev/null 2>&1
  wait "$helper"
  wait "$stat_pid"
  wait "$sipp_pid" || true
  server_alive "run $run (after SIPp)"
  stop_server
  failed=$(sipp_count sipp.txt 'Failed call')
  if [ -z "$failed" ]; then
    sipp_missing "run $run" sipp.txt
    cp sipp.txt "sipp-run$run.txt"
    fail "run $run" "no SIPp statistics (kept as $PWD/sipp-run$run.txt)"
  fi
  # argon2's own functions and the block copies it makes (memmove) against everything else.
  perf script -i perf.data -F ip,sym 2>/dev/null | awk -v calls="$sampled" -v run="$run" -v failed="$failed" '
    { total++; if ($0 ~ /argon2|memmove/) hash++ }
    END {
      other = total - hash
      printf "run %d: %d samples, argon2 %d, other %d: other = %.1f%% of argon2, %.2f ms a call (argon2 %.2f ms); %s failed calls\n",
        run, total, hash, other, 100 * other / hash, other * 0.5 / calls, hash * 0.5 / calls, failed
    }'
  # Thread switches a call: the media thread by name; the runtime's worker and the hashing
  # threads share the process name, told apart by their count (the worker switches most).
  awk -v calls="$sampled" '/context-switches/ { n = $2; gsub(",", "", n); n += 0; if ($1 ~ /media/) media += n; else other[++k] = n }
    END {
      worker = 0; for (i in other) if (other[i] > worker) { worker = other[i]; w = i }
      for (i in other) if (i != w) hashing += other[i]
      printf "       switches a call: worker %.1f, media %.1f, hashing %.1f\n", worker / calls, media / calls, hashing / calls
    }' switches.txt
done
