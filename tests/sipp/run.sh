#!/usr/bin/env bash
# Runs SIPp scenarios against vportal on loopback.
#
#   tests/sipp/run.sh [--vportal PATH] [SUITE...]
#
# Suites (default: all of them):
#   uac-udp    SIPp's built-in uac scenario: 100 calls to 8500 over UDP (INVITE, ACK, BYE)
#   uac-tcp    the same over TCP
#   options    500 OPTIONS requests, each answered 200
#   rtp        one 3 s call captured with tshark: ~50 PCMU packets a second reach SIPp
#   dtmf-pcap  keys "1001#" and "2580#" with SIPp's stock RFC 2833 pcaps (play_pcap_audio)
#   dtmf-play  keys "1122#" and "5005#" with SIPp's play_dtmf (telephone-event on PT 96)
#
# The DTMF suites provision the mailboxes with the CLI (on the server's database, while it
# runs) and check the server heard them, in order. They and `rtp` need root or CAP_NET_RAW
# (SIPp plays pcaps through a raw socket; tshark captures); `rtp` needs tshark.
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
[ ${#suites[@]} -gt 0 ] || suites=(uac-udp uac-tcp options rtp dtmf-pcap dtmf-play)

if ! command -v sipp >/dev/null 2>&1; then
  echo "sipp not found: install SIPp (Debian/Ubuntu: apt-get install sip-tester)" >&2
  exit 2
fi
if [ ! -x "$vportal" ]; then
  echo "vportal binary not found at $vportal (build it: cargo build --release)" >&2
  exit 2
fi
vportal=$(realpath "$vportal")

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Start the server and learn its port from the log line "vportal is listening sip=…".
(cd "$work" && RUST_LOG=info exec "$vportal" serve --sip 127.0.0.1:0 --rtp-ports 32000-32998 \
   --prompts "$here/../../prompts") \
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

# The mailbox numbers the server logged as keyed, in order, since line $1 of its log.
keyed_since() {
  tail -n +"$1" "$work/serve.log" | sed -n 's/.*mailbox keyed mailbox=\([0-9]*\).*/\1/p' | tr '\n' ' '
}

# A DTMF suite: provision mailboxes, run one call, expect them keyed in this order.
dtmf_suite() {
  local name="$1" scenario="$2"; shift 2
  local want="$*"
  for m in "$@"; do (cd "$work" && "$vportal" user add "$m" >/dev/null); done
  local from
  from=$(($(wc -l <"$work/serve.log") + 1))
  run_suite "$name" -sf "$here/$scenario" -s 8500 -m 1 -mp 6100
  local got
  got=$(keyed_since "$from")
  if [ "$got" = "$want " ]; then
    echo "   heard in order: $got"
  else
    echo "   FAILED ($name): expected mailboxes \"$want\", heard \"$got\"" >&2
    failed=1
  fi
}

# RTP suite: capture what the server sends during one 3 s call and count it.
rtp_suite() {
  echo "== rtp"
  if ! command -v tshark >/dev/null 2>&1; then
    echo "   FAILED (rtp): tshark not found (apt-get install tshark)" >&2; failed=1; return
  fi
  tshark -q -i lo -f "udp and src portrange 32000-32998 and dst port 6200" -a duration:6 \
    -w "$work/rtp.pcap" >/dev/null 2>&1 &
  local capture=$!
  sleep 1.5
  (cd "$work" && timeout 60 sipp "$addr" "${sipp_common[@]}" -sn uac -s 8500 -m 1 -d 3000 -mp 6200 \
     >/dev/null 2>&1) || { echo "   FAILED (rtp): the call failed" >&2; failed=1; }
  wait "$capture" || true
  # Packets of payload type 0 (PCMU) and the seconds they span.
  local stats
  stats=$(tshark -r "$work/rtp.pcap" -d udp.port==6200,rtp -T fields -e rtp.p_type -e frame.time_relative 2>/dev/null \
    | awk '$1 == 0 { n++; if (first == "") first = $2; last = $2 } END { if (n > 1) printf "%d %.3f %.1f", n, last - first, (n - 1) / (last - first); else print "0 0 0" }')
  read -r packets seconds rate <<<"$stats"
  echo "   $packets PCMU packets in ${seconds}s: $rate packets/s"
  if awk -v r="$rate" -v n="$packets" 'BEGIN { exit !(n >= 100 && r >= 48 && r <= 52) }'; then
    echo "   ok"
  else
    echo "   FAILED (rtp): expected about 50 packets/s for 3 s" >&2; failed=1
  fi
}

failed=0
for suite in "${suites[@]}"; do
  case "$suite" in
    uac-udp) run_suite uac-udp -sn uac -s 8500 -m 100 -r 50 -l 100 -d 200 ;;
    uac-tcp) run_suite uac-tcp -sn uac -s 8500 -t t1 -m 100 -r 50 -l 100 -d 200 ;;
    options) run_suite options -sf "$here/options.xml" -s 8500 -m 500 -r 250 ;;
    rtp) rtp_suite ;;
    dtmf-pcap) dtmf_suite dtmf-pcap dtmf-pcap.xml 1001 2580 ;;
    dtmf-play) dtmf_suite dtmf-play dtmf-play.xml 1122 5005 ;;
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
