#!/usr/bin/env bash
# Runs SIPp scenarios against vportal on loopback.
#
#   tests/sipp/run.sh [--vportal PATH] [SUITE...]
#
# Suites (default: all of them):
#   uac-udp   SIPp's built-in uac scenario: 100 calls to 8500 over UDP (INVITE, ACK, BYE)
#   uac-tcp   the same over TCP
#   options   500 OPTIONS requests, each answered 200
#
# It starts `vportal serve` in a temporary directory on 127.0.0.1 (a port the system
# picks), runs each suite with a bounded number of calls and a time limit, stops the
# server with SIGTERM, and exits non-zero if any suite failed. SIPp (Debian/Ubuntu package
# `sip-tester`) must be installed. Nothing leaves the machine: every address is loopback.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
vportal="${VPORTAL:-$here/../../target/release/vportal}"
suites=()
while [ $# -gt 0 ]; do
  case "$1" in
    --vportal) vportal="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) suites+=("$1"); shift ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(uac-udp uac-tcp options)

if ! command -v sipp >/dev/null 2>&1; then
  echo "sipp not found: install SIPp (Debian/Ubuntu: apt-get install sip-tester)" >&2
  exit 2
fi
if [ ! -x "$vportal" ]; then
  echo "vportal binary not found at $vportal (build it: cargo build --release)" >&2
  exit 2
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Start the server and learn its port from the log line "vportal is listening sip=…".
(cd "$work" && RUST_LOG=info exec "$vportal" serve --sip 127.0.0.1:0 --rtp-ports 32000-32998) \
  >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
addr=""
for _ in $(seq 1 200); do
  addr=$(sed -n 's/.*listening sip=\([0-9.]*:[0-9]*\).*/\1/p' "$work/serve.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "vportal did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
echo "vportal listening on $addr"

# Common SIPp flags: loopback only, bounded in count and time, no keyboard, stats on exit.
sipp_common=(-i 127.0.0.1 -nostdin -timeout 60s -timeout_error -max_retrans 5)

run_suite() {
  local name="$1"; shift
  echo "== $name"
  if (cd "$work" && timeout 120 sipp "$addr" "${sipp_common[@]}" "$@" -trace_screen -screen_file "$work/$name.screen" >/dev/null 2>&1); then
    grep -E "Successful call|Failed call" "$work/$name.screen" | sed 's/^/   /'
    echo "   ok"
  else
    echo "   FAILED ($name)" >&2
    cat "$work/$name.screen" >&2 2>/dev/null || true
    failed=1
  fi
}

failed=0
for suite in "${suites[@]}"; do
  case "$suite" in
    uac-udp) run_suite uac-udp -sn uac -s 8500 -m 100 -r 50 -l 100 -d 200 ;;
    uac-tcp) run_suite uac-tcp -sn uac -s 8500 -t t1 -m 100 -r 50 -l 100 -d 200 ;;
    options) run_suite options -sf "$here/options.xml" -s 8500 -m 500 -r 250 ;;
    *) echo "unknown suite $suite" >&2; failed=1 ;;
  esac
done

# Graceful stop: SIGTERM, then the server hangs up and exits by itself.
kill -TERM "$server_pid"
for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then echo "vportal did not stop on SIGTERM" >&2; failed=1; fi
wait "$server_pid" 2>/dev/null || true
server_pid=""
exit $failed
