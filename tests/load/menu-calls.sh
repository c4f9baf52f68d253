#!/usr/bin/env bash
# Concurrent logged-in calls sitting in the menu, measured at the receiving end.
#
#   tests/load/menu-calls.sh [CALLS] [LOGINS_PER_SECOND]      (default: 3000 20)
#
# Provisions CALLS mailboxes (40000…, permanent passcode 48826) with the CLI, starts the
# release build of `vportal serve` pinned to CPU 1 with a dialplan whose menu waits a minute
# per prompt, and runs the load caller (benches/tools/load_caller.rs --login) pinned to CPU 0: it
# sets up CALLS calls, logs each one in with RFC 4733 keys (argon2 check included), measures
# 10 s of the menu prompts' RTP (per-stream largest gap, jitter, loss, server CPU and memory),
# then presses `*` in every call and counts the server's goodbye BYEs. Prints how many
# logins the server recorded. Loopback only; bounded in count and time.
# RTPRIO=N runs the server's media thread at SCHED_FIFO priority N (root or CAP_SYS_NICE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
calls="${1:-3000}"
rate="${2:-20}"
build_release load_caller

work_dir
"$vportal" init >/dev/null 2>init.err
echo "provisioning $calls mailboxes…"
provision 40000 "$calls"
mkdir dialplans
cat >dialplans/default.toml <<'PLAN'
# Callers who sit in the menu: a minute per prompt, five reprompts.
[defaults]
first_digit_timeout = "60s"
inter_digit_timeout = "10s"
reprompts = 5
max_call_duration = "1h"

[[route]]
match = "8500"
application = "voice-portal"
PLAN
media_config
RUST_LOG=warn,vportal::server=info,vportal::server::call=info "${guard[@]}" taskset -c 1 "$vportal" serve --config vportal.toml --no-admin \
  --sip 127.0.0.1:0 --rtp-ports 10000-30000 --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
pid=$!
addr=$(listening sip)
echo "vportal $addr (pid $pid, CPU 1); $calls calls logging in at $rate/s from CPU 0"
helper taskset -c 0 timeout $((calls / rate + 240)) "$examples/load_caller" \
  --server "$addr" --calls "$calls" --rate 300 --login 40000,48826 --login-rate "$rate" \
  --settle 10 --measure 10 --pid "$pid"
wait "$helper"
server_alive "after the load caller"
echo "logins recorded by the server: $(grep -c 'logged in mailbox=' serve.log || true)"
echo "server warnings and errors: $(grep -c -E ' (WARN|ERROR) ' serve.log || true)"
