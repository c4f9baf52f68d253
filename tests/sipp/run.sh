#!/usr/bin/env bash
# Runs SIPp scenarios against vportal on loopback.
#
#   tests/sipp/run.sh [--vportal PATH] [SUITE...]
#
# Suites (default: all of them):
#   uac-udp    SIPp's built-in uac scenario: 100 calls to 8500 over UDP (INVITE, ACK, BYE)
#   uac-tcp    the same over TCP
#   options    500 OPTIONS requests, each answered 200
#   rtp        one 3 s call captured with tshark: one PCMU stream reaches SIPp, numbered
#              without a gap, timestamps 160 (20 ms) a packet
#   change-pcap    1001, on a temporary passcode, logs in with SIPp's stock RFC 2833 pcaps
#                  (play_pcap_audio), is made to choose a PIN, keys it twice, says goodbye
#   change-play    the same for 1122 with SIPp's play_dtmf (telephone-event on PT 96)
#   refused-change 5005 logs in, then a mismatch, a too-simple PIN and its own extension:
#                  after three tries the server hangs up, the temporary passcode in place
#   lockout        five wrong passcodes for 2580 over two calls lock the mailbox
#   expired        3003's temporary passcode has expired: refused, audited login.expired
#
# The call-flow suites provision their mailboxes with the CLI (on the server's database,
# while it runs), let SIPp key the digits and wait for the server's BYE, and then check the
# outcome with the CLI, as an admin would. They and `rtp` need root or CAP_NET_RAW (SIPp
# plays pcaps through a raw socket; tshark captures); `rtp` needs tshark.
#
# It starts `vportal serve` in a temporary directory on 127.0.0.1 (a port the system
# picks), runs each suite with a bounded number of calls and a time limit, stops the
# server with SIGTERM, and exits non-zero if any suite failed. SIPp (Debian/Ubuntu package
# `sip-tester`) must be installed. Nothing leaves the machine: every address is loopback.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# Where `cargo build --release` put it, CARGO_TARGET_DIR honoured (relative: to the repo).
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$here/../../$target" ;; esac
vportal="${VPORTAL:-$target/release/vportal}"
suites=()
while [ $# -gt 0 ]; do
  case "$1" in
    --vportal) vportal="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) suites+=("$1"); shift ;;
  esac
done
[ ${#suites[@]} -gt 0 ] || suites=(uac-udp uac-tcp options rtp change-pcap change-play refused-change lockout expired)

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
capture=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  if [ -n "$capture" ] && kill -0 "$capture" 2>/dev/null; then kill -INT "$capture" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Start the server and learn its port from the log line "vportal is listening sip=…".
# The server gets SIGTERM when this script dies, even by SIGKILL, whose trap never runs.
guard=()
if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then guard=(setpriv --pdeathsig TERM); fi
(cd "$work" && RUST_LOG=info exec "${guard[@]}" "$vportal" serve --sip 127.0.0.1:0 --admin 127.0.0.1:0 --rtp-ports 32000-32998 \
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

# Common SIPp flags: loopback only, its own SIP port fixed (left to itself, SIPp takes 5060
# when it is free), bounded in count and time, no keyboard, stats on exit.
sipp_common=(-i 127.0.0.1 -p 6060 -nostdin -timeout 60s -timeout_error -max_retrans 5)

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

# The CLI on the server's database (it runs alongside the server).
cli() { (cd "$work" && "$vportal" "$@"); }

# Provisions MAILBOX with the temporary passcode PASSCODE (extra CLI flags after it).
provision() {
  local mailbox="$1" passcode="$2"; shift 2
  printf '%s' "$passcode" | cli user add "$mailbox" --passcode-stdin --temporary "$@" >/dev/null
}

# Key presses for portal-pcap.xml: one stock pcap per key, 300 ms apart.
keys_pcap() {
  local keys="$1" k file i
  for ((i = 0; i < ${#keys}; i++)); do
    k=${keys:i:1}
    case "$k" in '#') file=pound ;; '*') file=star ;; *) file=$k ;; esac
    printf '  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_%s.pcap" /></action></nop>\n' "$file"
    printf '  <pause milliseconds="300" />\n'
  done
}

# Key presses for portal-play.xml: one play_dtmf per entry (up to and including each #),
# given 500 ms a key to finish before the next starts.
keys_play() {
  local keys="$1" entry="" k i
  for ((i = 0; i < ${#keys}; i++)); do
    k=${keys:i:1}
    entry+=$k
    if [ "$k" = "#" ] || [ "$i" -eq $((${#keys} - 1)) ]; then
      printf '  <nop><action><exec play_dtmf="%s" /></action></nop>\n' "$entry"
      printf '  <pause milliseconds="%d" />\n' $((${#entry} * 500))
      entry=""
    fi
  done
}

# One call to 8500 keying KEYS by STYLE (pcap or play), until the server hangs up.
portal_call() {
  local name="$1" style="$2" keys="$3" media_port="$4"
  "keys_$style" "$keys" >"$work/$name.keys"
  sed -e "/<!-- KEYS -->/{r $work/$name.keys" -e 'd}' "$here/portal-$style.xml" >"$work/$name.xml"
  run_suite "$name" -sf "$work/$name.xml" -s 8500 -m 1 -mp "$media_port"
}

# Reports WHAT as checked when the command after it succeeds.
check() {
  local name="$1" what="$2"; shift 2
  if "$@"; then
    echo "   checked: $what"
  else
    echo "   FAILED ($name): $what" >&2
    failed=1
  fi
}

# Whether MAILBOX's JSON (vportal user show) has "FIELD": VALUE (the whole value).
user_has() {
  local out
  out=$(cli --json user show "$1") || return 1
  grep -qE "^ *\"$2\": $3,?\$" <<<"$out"
}

# Whether MAILBOX has an audit event EVENT.
audited() {
  local out
  out=$(cli --json audit --extension "$1" --event "$2") || return 1
  grep -q "\"event\": \"$2\"" <<<"$out"
}

# Whether MAILBOX has no audit event EVENT: false, too, when the audit cannot be read.
not_audited() {
  local out
  out=$(cli --json audit --extension "$1" --event "$2") || return 1
  ! grep -q "\"event\": \"$2\"" <<<"$out"
}

change_suite() {
  local name="$1" style="$2" mailbox="$3" media_port="$4"
  provision "$mailbox" 48826
  # Mailbox, temporary passcode, the new PIN twice, then * (goodbye) from the menu.
  portal_call "$name" "$style" "$mailbox#48826#59937#59937#*" "$media_port"
  check "$name" "$mailbox is no longer temporary" user_has "$mailbox" temporary false
  check "$name" "$mailbox has a passcode.changed audit event" audited "$mailbox" passcode.changed
}

refused_change_suite() {
  provision 5005 48826
  # A mismatch, a run (too simple), the extension itself: three tries, then goodbye.
  portal_call refused-change play "5005#48826#59937#59938#1234#1234#5005#5005#" 6800
  check refused-change "5005 is still temporary" user_has 5005 temporary true
  check refused-change "5005 has passcode.change_rejected audit events" audited 5005 passcode.change_rejected
  check refused-change "5005 has no passcode.changed audit event" not_audited 5005 passcode.changed
}

lockout_suite() {
  provision 2580 48826
  # Three tries per call: the server hangs up after the third; the fifth failure locks.
  portal_call lockout pcap "2580#11111#2580#22222#2580#33333#" 7000
  check lockout "2580 has three failed attempts" user_has 2580 failed_attempts 3
  check lockout "2580 is not locked after three failures" user_has 2580 locked false
  portal_call lockout-2 pcap "2580#44444#2580#55555#" 7000
  check lockout "2580 is locked after five failures across calls" user_has 2580 locked true
  check lockout "2580 has a user.locked audit event" audited 2580 user.locked
  # The right passcode is refused now.
  portal_call lockout-3 pcap "2580#48826#" 7000
  check lockout "2580's right passcode is refused while locked (login.locked)" audited 2580 login.locked
  check lockout "2580 has no login.success audit event" not_audited 2580 login.success
}

expired_suite() {
  provision 3003 48826 --ttl 1s
  sleep 1.5
  portal_call expired play "3003#48826#" 7200
  check expired "3003 has a login.expired audit event" audited 3003 login.expired
  check expired "3003 has no login.success audit event" not_audited 3003 login.success
}

# Sends datagrams to 127.0.0.1:PORT until the capture running as $capture (writing
# $work/rtp.pcap) holds one (at most 30 s): everything sent on loopback before it has been
# captured and written, and the capture is running. False if it never shows.
mark_capture() {
  local port="$1" deadline=$((SECONDS + 30))
  while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$capture" 2>/dev/null; do
    echo "vportal run.sh marker" 2>/dev/null >"/dev/udp/127.0.0.1/$port" || true
    if tshark -r "$work/rtp.pcap" -Y "udp.dstport == $port" 2>/dev/null | grep -q .; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# RTP suite: capture what the server sends during one 3 s call and check the stream.
rtp_suite() {
  echo "== rtp"
  if ! command -v tshark >/dev/null 2>&1; then
    echo "   FAILED (rtp): tshark not found (apt-get install tshark)" >&2; failed=1; return
  fi
  # The server's RTP to SIPp, and the markers that open and close the capture (on ports
  # nothing listens on). Stopped once the call is over; two minutes at most regardless.
  capture=""
  tshark -q -i lo -a duration:120 -w "$work/rtp.pcap" \
    -f "(udp and src portrange 32000-32998 and dst port 6200) or (udp and dst port 6297) or (udp and dst port 6299)" \
    >/dev/null 2>"$work/tshark.log" &
  capture=$!
  if ! mark_capture 6297; then
    echo "   FAILED (rtp): the capture did not start" >&2; cat "$work/tshark.log" >&2
    kill -INT "$capture" 2>/dev/null || true; wait "$capture" || true
    failed=1; return
  fi
  (cd "$work" && timeout 60 sipp "$addr" "${sipp_common[@]}" -sn uac -s 8500 -m 1 -d 3000 -mp 6200 \
     >/dev/null 2>&1) || { echo "   FAILED (rtp): the call failed" >&2; failed=1; }
  mark_capture 6299 || { echo "   FAILED (rtp): the capture lost its end marker" >&2; failed=1; }
  kill -INT "$capture" 2>/dev/null || true
  wait "$capture" || true
  # The server's packets to SIPp as RTP: each should be 20 ms of PCMU (payload type 0, a
  # UDP length of 180: 8 of UDP header, 12 of RTP header, 160 of PCMU), numbered one after
  # the other, its timestamp 160 on from the last; a stream that fell behind skips whole
  # frames now and then (a step of several frames), and a prompt started at once, a
  # talkspurt (marked), may come less than a frame after the packet before it (the welcome
  # can, right after the stream's first packet). How fast they came is not checked: the
  # load scripts measure pacing, and a loaded machine says nothing about it. At least a
  # second of stream in the 3 s call.
  local stats
  stats=$(tshark -r "$work/rtp.pcap" -d udp.port==6200,rtp -Y "udp.dstport == 6200" -T fields -e rtp.p_type -e udp.length -e rtp.seq -e rtp.timestamp -e rtp.marker 2>/dev/null \
    | awk -F '\t' '
        { n++
          if ($1 != "0" || $2 != "180") other++
          if (n > 1) {
            if (($3 - seq + 65536) % 65536 != 1) gaps++
            step = ($4 - ts + 4294967296) % 4294967296
            # (tshark prints a flag as 1, or as True from Wireshark 4.2.)
            early = ($5 == "1" || $5 == "True") && step > 0 && step < 160
            if (!early) { if (step == 0 || step % 160 != 0) bad++; else skipped += step / 160 - 1 }
          }
          seq = $3; ts = $4 }
        END { printf "%d %d %d %d %d", n, other, gaps, bad, skipped }')
  local packets other gaps bad skipped frames
  read -r packets other gaps bad skipped <<<"$stats"
  frames=$((packets + skipped))
  echo "   packets=$packets not_pcmu_20ms=$other seq_gaps=$gaps bad_steps=$bad skipped=$skipped frames=$frames"
  if [ "$packets" -ge 50 ] && [ "$other" -eq 0 ] && [ "$gaps" -eq 0 ] && [ "$bad" -eq 0 ] \
     && [ $((skipped * 10)) -le "$frames" ]; then
    echo "   ok"
  else
    echo "   FAILED (rtp): expected one stream of 20 ms PCMU packets, numbered without a gap, timestamps 160 a packet (few frames skipped)" >&2; failed=1
  fi
}

failed=0
for suite in "${suites[@]}"; do
  case "$suite" in
    uac-udp) run_suite uac-udp -sn uac -s 8500 -m 100 -r 50 -l 100 -d 200 ;;
    uac-tcp) run_suite uac-tcp -sn uac -s 8500 -t t1 -m 100 -r 50 -l 100 -d 200 ;;
    options) run_suite options -sf "$here/options.xml" -s 8500 -m 500 -r 250 ;;
    rtp) rtp_suite ;;
    change-pcap) change_suite change-pcap pcap 1001 6400 ;;
    change-play) change_suite change-play play 1122 6600 ;;
    refused-change) refused_change_suite ;;
    lockout) lockout_suite ;;
    expired) expired_suite ;;
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
