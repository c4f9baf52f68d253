#!/usr/bin/env bash
# Login latency: from a caller's `#` to the first RTP packet of the next prompt, with N
# callers logging in over and over at once (argon2 check included).
#
#   tests/load/login-latency.sh [CALLERS] [SECONDS]        (default: 50 60)
#
# Provisions CALLERS mailboxes (30000…, permanent passcode 48826) with the CLI, starts the
# release build of `vportal serve` pinned to CPU 1 and the caller (benches/tools/login_latency.rs)
# pinned to CPU 0, and prints, per step, the samples, the steps whose next prompt never came
# (counted in the percentiles as 2 s), the median, p90, p99 and maximum in milliseconds, and
# the failed calls. Then it checks the logins the tool counted against the server's audit
# (login.success, read from the database) and exits 1 if the tool counted more, or fewer by
# more than the callers (a call that missed a step after its login is not counted): a login
# the tool counted must be one the server made (not, say, a wrong-passcode prompt taken for
# the menu).
# Loopback only; bounded in time. Needs sqlite3 and taskset.
# RTPRIO=N runs the server's media thread at SCHED_FIFO priority N (root or CAP_SYS_NICE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
callers="${1:-50}"
seconds="${2:-60}"
command -v sqlite3 >/dev/null || { echo "install sqlite3 (apt-get install sqlite3)" >&2; exit 2; }
build_release login_latency

work_dir
"$vportal" init >/dev/null 2>init.err
provision 30000 "$callers"
media_config
RUST_LOG=warn,vportal::server=info,vportal::server::call=warn "${guard[@]}" taskset -c 1 "$vportal" serve --config vportal.toml --no-admin \
  --sip 127.0.0.1:0 --rtp-ports 14000-19998 --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
pid=$!
addr=$(listening sip)
echo "vportal $addr (pid $pid, CPU 1); $callers callers on CPU 0 for ${seconds}s"
t0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); s0=$(date +%s.%N)
helper taskset -c 0 timeout $((seconds + 60)) "$examples/login_latency" --server "$addr" \
  --callers "$callers" --first-mailbox 30000 --passcode 48826 --seconds "$seconds" >latency.out
wait "$helper"
cat latency.out
server_alive "after the callers"
t1=$(awk '{print $14 + $15}' "/proc/$pid/stat"); s1=$(date +%s.%N)
awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v s0="$s0" -v s1="$s1" \
  'BEGIN { printf "server CPU: %.0f%% of one core\n", t / hz / (s1 - s0) * 100 }'
# The server's own count: every login it made is audited (the audit CLI lists at most 10,000
# rows, so count in the database).
counted=$(sed -n 's/^logins counted: //p' latency.out)
audited=$(sqlite3 -readonly vportal.db "SELECT count(*) FROM audit WHERE event = 'login.success' AND actor = 'caller'")
outcomes=$(sqlite3 -readonly vportal.db "SELECT event || ' ' || count(*) FROM audit WHERE event LIKE 'login.%' GROUP BY event" | paste -sd, -)
echo "logins audited by the server: $audited (${outcomes:-none}); counted by the tool: ${counted:-?}"
# The server may log a caller in whose call the tool then does not count (a later step
# missed or the call failed, both reported above): allowed up to one per caller, never the
# other way round.
if [ -z "$counted" ] || [ "$counted" -gt "$audited" ] || [ "$((audited - counted))" -gt "$callers" ]; then
  fail "the login check" "the tool counted ${counted:-no} logins, the server audited $audited: the latencies are not those of $counted logins"
fi
