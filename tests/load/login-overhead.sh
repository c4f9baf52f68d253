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
# same in ms per call, and the thread switches per call (runtime workers, media thread,
# hashing threads, main thread; told apart by thread id, see below). "argon2" is every
# sample whose symbol names argon2 or memmove (argon2's block copies; other memcpys fall
# there too: a small upward bias of the argon2 count). RATE must be one the server sustains (login-calls.sh), or the samples
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
# shellcheck disable=SC2119 # no examples
build_release

work_dir
"$vportal" init >/dev/null 2>init.err
provision 20000 3000
mkdir template && mv vportal.db vportal.pepper template/
{ echo SEQUENTIAL; seq 20000 22999 | sed 's/./&;/g'; } >mailboxes.csv
calls=$((rate * 40))
sampled=$((rate * 12))

for run in $(seq 1 "$runs"); do
  rm -f vportal.db* && cp template/vportal.db template/vportal.pepper .
  media_config
  RUST_LOG=warn,vportal::server=info,vportal::server::call=warn "${guard[@]}" taskset -c 1 "$vportal" serve --config vportal.toml --no-admin --sip 127.0.0.1:0 --rtp-ports 14000-19998 \
    --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
  pid=$!
  addr=$(listening sip)
  # The threads there are before the first call: the main thread, the runtime's workers
  # (named like the process) and the media thread; threads named like the process that start
  # later are tokio's blocking pool, which runs the hashes and their commits.
  ls "/proc/$pid/task" >threads-at-start.txt
  ports_free "run $run" 11100 11104
  helper taskset -c 0 timeout 120 sipp "$addr" -sf "$here/login-info.xml" -inf mailboxes.csv -s 8500 \
    -i 127.0.0.1 -p 11104 -mp 11100 -nostdin -r "$rate" -m "$calls" -timeout 90s -timeout_error \
    -max_retrans 5 >sipp.txt 2>&1
  sipp_pid=$helper
  nap 10
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
  # Thread switches a call, told apart by thread id (perf names each `comm-tid`): the main
  # thread (tid = pid), the media thread (vportal-media), the runtime's workers (there
  # before the first call) and the hashing threads (the blocking pool, started later).
  awk -v calls="$sampled" -v main="$pid" 'FNR == NR { early[$1] = 1; next }
    /context-switches/ {
      n = $2; gsub(",", "", n); n += 0; tid = $1; sub(/.*-/, "", tid)
      if (tid == main) m += n
      else if ($1 ~ /media/) media += n
      else if (tid in early) { worker += n; workers++ }
      else { hashing += n; hashers++ }
    }
    END {
      printf "       switches a call: runtime workers %.1f (%d threads), media %.1f, hashing %.1f (%d threads), main %.1f\n",
        worker / calls, workers, media / calls, hashing / calls, hashers, m / calls
    }' threads-at-start.txt switches.txt
done
