#!/usr/bin/env bash
# Login-call load: the sustained rate of complete login calls vportal serves with zero
# failures, every login checked with argon2id.
#
#   tests/load/login-calls.sh [RATE ...]        (default: 60 70 75 80)
#
# Provisions 3,000 mailboxes (20000-22999, permanent passcode 48826) with the CLI, starts the release
# build of `vportal serve` pinned to CPU 1 and SIPp pinned to CPU 0 (the fair split on a
# 2-core machine). At each RATE it places RATE x 30 calls (30 s) with tests/load/login-info.xml:
# dial, mailbox and passcode by SIP INFO, `*` in the menu, the server's goodbye and BYE. It
# prints SIPp's successful and failed calls, the logins the store audited (login.success),
# the call length (INVITE to the server's BYE: upper median, p99 by nearest rank, max), the server's CPU use and
# resident memory, and its verdict, computed from SIPp's per-call lengths (the rtt file: each
# call's completion time and length): the calls in order of completion, the median length of
# the last fifth against that of the first fifth ("fifths ms"). A rate is
#   sustained  when every call succeeds and logs in (successful = logins = calls, failed 0)
#              and the last fifth's median is at most 50 ms above the first fifth's (no
#              backlog building up; a queue behind the hash makes the late calls longer);
#   growing    when every call succeeds but the last fifth's median is more than 50 ms above;
#   failures   when a call failed or did not log in.
# Before and after each rate it
# measures the hash ceiling on CPU 1 (benches/tools/hash_ceiling.rs: vportal's own argon2 check,
# back to back, 3 s) and prints their mean and the rate as a share of it: on a shared
# virtual machine the ceiling drifts by up to a fifth from one minute to the next. Loopback only;
# bounded in count and time. Needs SIPp (package sip-tester), sqlite3, curl and taskset
# (util-linux). "verify ms" is the mean of the server's own timer around each check
# (vportal_argon2_verify_seconds, from /metrics) over the rate: wall time, so on a full core
# it includes the other calls' work the check was interrupted by.
# A rate whose SIPp run printed no statistics gets a row of `-` and a message naming it;
# the script then exits 1 and keeps its work directory (SIPp's output, serve.log). A server
# that died ends it at once, the same way.
# RTPRIO=N runs the server's media thread at SCHED_FIFO priority N (root or CAP_SYS_NICE).
# LOGIN=caller-id places the same calls with tests/load/login-cid.xml instead: the mailbox is
# the From user (the default dialplan's *86 route) and only the passcode and `*` are keyed,
# 7 INFO transactions a call instead of 13.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(60 70 75 80)
case "${LOGIN:-ask}" in
  # The mailbox's digits as fields 0-4, keyed one by one.
  ask) scenario=login-info; service=8500; fields='s/./&;/g' ;;
  # The whole mailbox as field 0, the From user.
  caller-id) scenario=login-cid; service='*86'; fields='s/$/;/' ;;
  *) echo "LOGIN is ask or caller-id" >&2; exit 2 ;;
esac
command -v sipp >/dev/null || { echo "install SIPp (apt-get install sip-tester)" >&2; exit 2; }
command -v sqlite3 >/dev/null || { echo "install sqlite3 (apt-get install sqlite3)" >&2; exit 2; }
command -v curl >/dev/null || { echo "install curl" >&2; exit 2; }
build_release hash_ceiling
# Checks per second one core does right now.
ceiling() { taskset -c 1 "$examples/hash_ceiling" --seconds 3 | awk '{print $3}'; }

work_dir
token=$("$vportal" init --token-name load 2>init.err | grep -o 'vpt_[0-9a-f]*')
provision 20000 3000
{ echo SEQUENTIAL; seq 20000 22999 | sed "$fields"; } >mailboxes.csv

media_config
RUST_LOG=warn,vportal::admin=info,vportal::server=info,vportal::server::call=warn "${guard[@]}" taskset -c 1 "$vportal" serve --config vportal.toml --admin 127.0.0.1:0 --sip 127.0.0.1:0 --rtp-ports 14000-19998 \
  --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
pid=$!
addr=$(listening sip)
admin=$(listening admin)
echo "vportal $addr (pid $pid, CPU 1); SIPp on CPU 0"

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss() { awk '/VmRSS/{print $2" kB"}' "/proc/$pid/status"; }
# The audit CLI lists at most 10,000 rows; a run audits more, so count in the database.
logins() { sqlite3 -readonly vportal.db "SELECT count(*) FROM audit WHERE event = 'login.success'"; }
# The check timer's sum (s) and count so far: "0 0" before the first check, "- -" when
# /metrics did not answer within 10 s.
verifies() {
  local metrics
  if ! metrics=$(curl "${curl_opts[@]}" --fail -H "Authorization: Bearer $token" "http://$admin/metrics"); then
    echo "GET /metrics failed or timed out (rate $rate)" >&2
    echo "- -"
    return 0
  fi
  awk '/^vportal_argon2_verify_seconds_sum/ { s = $2 } /^vportal_argon2_verify_seconds_count/ { n = $2 } END { print s + 0, n + 0 }' <<<"$metrics"
}
hz=$(getconf CLK_TCK)
# The growth allowed from the first fifth's median call length to the last fifth's (ms).
growth_ms=50
# median: the (upper) median of the numbers on standard input, or nothing.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int(NR / 2) + 1] }'; }
row='%6s %7s %10s %7s %8s %20s %12s %10s %10s %10s %12s %9s %11s\n'
# shellcheck disable=SC2059 # the format is $row
printf "$row" rate calls successful failed logins "call ms p50/p99/max" "fifths ms" verdict "server CPU" "verify ms" rss ceiling "of ceiling"
missing=0
for rate in "${rates[@]}"; do
  server_alive "rate $rate (before SIPp)"
  calls=$((rate * 30))
  c0=$(ceiling)
  before=$(logins); v0=$(verifies); t0=$(ticks); s0=$(date +%s.%N)
  out="sipp-$rate.txt"
  ports_free "rate $rate" 11100 11104
  helper taskset -c 0 timeout 120 sipp "$addr" -sf "$here/$scenario.xml" -inf mailboxes.csv -s "$service" \
    -i 127.0.0.1 -p 11104 -mp 11100 -nostdin -r "$rate" -m "$calls" -timeout 90s -timeout_error \
    -max_retrans 5 -trace_rtt -rtt_freq 1 >"$out" 2>&1
  wait "$helper" || true
  server_alive "rate $rate (SIPp run)"
  t1=$(ticks); s1=$(date +%s.%N); v1=$(verifies)
  ok=$(sipp_count "$out" 'Successful call'); failed=$(sipp_count "$out" 'Failed call')
  if [ -z "$ok" ] || [ -z "$failed" ]; then
    sipp_missing "rate $rate" "$out"
    missing=$((missing + 1)); ok=${ok:--}; failed=${failed:--}
  fi
  # Each call's length, INVITE to the server's BYE (SIPp's rtt file): flat while the server
  # keeps up; once logins queue behind the hash, the late calls grow longer and longer.
  rtt=$(compgen -G "${scenario}_*_rtt.csv" || true)
  [ -n "$rtt" ] || echo "rate $rate: SIPp wrote no call lengths (${scenario}_*_rtt.csv)" >&2
  # shellcheck disable=SC2086 # one name (SIPp's pid in it), or none
  length=$(cat /dev/null $rtt | tail -n +2 | cut -d';' -f2 | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR) { p = int((NR * 99 + 99) / 100); printf "%d/%d/%d", v[int(NR / 2) + 1], v[p], v[NR] } }')
  length=${length:--}
  # The trend: first and last fifth of the calls by completion time (column 1).
  # shellcheck disable=SC2086 # as above
  cat /dev/null $rtt | tail -n +2 | sort -t';' -k1,1g | cut -d';' -f2 >lengths.txt
  n=$(wc -l <lengths.txt); fifth=$((n / 5))
  first=""; last=""
  if [ "$fifth" -gt 0 ]; then
    first=$(head -n "$fifth" lengths.txt | median); last=$(tail -n "$fifth" lengths.txt | median)
  fi
  rm -f "$scenario"_*_rtt.csv
  cpu=$(awk -v t="$((t1 - t0))" -v hz="$hz" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.0f%%", t / hz / (s1 - s0) * 100 }')
  done_logins=$(($(logins) - before)); memory=$(rss)
  verdict=$(awk -v ok="$ok" -v failed="$failed" -v logins="$done_logins" -v calls="$calls" \
    -v first="$first" -v last="$last" -v allowed="$growth_ms" 'BEGIN {
      if ((failed != "-" && failed != 0) || (ok != "-" && ok != calls) || logins != calls) print "failures"
      else if (ok == "-" || first == "") print "-"
      else if (last - first > allowed) print "growing"
      else print "sustained" }')
  fifths=$([ -n "$first" ] && printf '%.0f->%.0f' "$first" "$last" || echo -)
  verify=$(echo "$v0 $v1" | awk '$1 == "-" || $3 == "-" { print "-"; next } { n = $4 - $2; if (n > 0) printf "%.2f", ($3 - $1) / n * 1000; else print "-" }')
  sleep 3
  c1=$(ceiling)
  share=$(awk -v r="$rate" -v a="$c0" -v b="$c1" 'BEGIN { c = (a + b) / 2; printf "%.1f/s %.0f%%", c, r / c * 100 }')
  # shellcheck disable=SC2059,SC2086 # the format is $row; $share is two columns
  printf "$row" "$rate" "$calls" "$ok" "$failed" "$done_logins" "$length" "$fifths" "$verdict" "$cpu" "$verify" "$memory" $share
done
if [ "$missing" -gt 0 ]; then
  fail "$missing rate(s)" "SIPp printed no statistics (see above)"
fi
