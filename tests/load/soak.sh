#!/usr/bin/env bash
# Soak: a bounded run of a realistic mixed workload, looking for leaks and for a store whose
# state does not match what was done to it.
#
#   tests/load/soak.sh [SECONDS]        (default: 600; 60 to 7200)
#
# Starts the release build of `vportal serve` pinned to CPU 1 (SIP and admin on loopback
# port 0, RTP ports 12000-13999) and, on CPU 0, for SECONDS:
#   - SIPp login calls (keys by SIP INFO), and a CANCEL caller, 13 calls/s in all: logins to permanent mailboxes
#     over UDP (5/s) and TCP (1/s, a connection each); temporary passcodes changed (2/s, each mailbox once);
#     changes hung up on at a random moment after the new PIN is keyed (1/s, each mailbox
#     once); wrong passcodes, one a call, that lock mailboxes (2/s over 50 mailboxes); BYE
#     mid-prompt (1/s) and CANCEL before the answer (1/s);
#   - admin API requests (create, show, reset, bulk reset, unlock, delete, list, audit,
#     report, calls, metrics) and CLI commands (user add/show/list/set-temp/unlock/delete,
#     audit, report, token list, policy show) on the same database;
#   - garbage: malformed SIP datagrams and TCP streams, INVITEs never ACKed, RTP (random bytes and RFC 4733 key
#     events) from strangers to the RTP ports, a few a second.
# Every 5 s it samples the server's RSS, open fds, threads, the SQLite WAL size and the
# `vportal_calls_active` gauge (samples.tsv). Then it checks, printing a table and exiting 1
# if any check fails: RSS, fds and the WAL level out (the last third of the run grows by no
# more than a margin over the middle third), the WAL stays under 16 MiB, `PRAGMA
# integrity_check` is ok, the active-call gauge is back to 0, the store matches what the
# drivers did (audit counts against SIPp's successful calls, changed mailboxes no longer
# temporary, failure counts and locks replayed from the audit trail, admin and CLI mailboxes
# created less deleted, the metrics' counters against the audit), no ERROR or panic line in
# the log and no secret (token, pepper, the passcodes keyed) in it.
# SOAK_KEEP=1 keeps the work directory (the log, samples, SIPp statistics) and prints it; a
# run that fails keeps it too. On exit (a failure, Ctrl-C, SIGTERM) the server, SIPp, the
# CANCEL caller and the drivers are stopped.
# SOAK_HEAPTRACK=FILE runs the server under heaptrack (package heaptrack), which writes its
# profile to FILE.zst once the server has stopped (read it with `heaptrack_print -f
# FILE.zst --print-peaks 1 --print-leaks 1`); the server is slower then. The server inherits
# the environment, so `MALLOC_ARENA_MAX=2 tests/load/soak.sh 300` runs it with two arenas.
# Loopback only; bounded in time (SIPp places a fixed number of calls, each instance under
# `timeout`; every loop, the CANCEL caller included, stops at the deadline; every HTTP
# request gives up after 10 s). Needs SIPp (sip-tester), sqlite3, curl, python3 and taskset (util-linux).
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
duration="${1:-600}"
# The mailbox blocks below (five digits, as the SIPp scenarios key them) hold two hours.
if ! [[ "$duration" =~ ^[0-9]+$ ]] || [ "$duration" -lt 60 ] || [ "$duration" -gt 7200 ]; then echo "usage: $0 [SECONDS, 60 to 7200]" >&2; exit 2; fi
for tool in sipp sqlite3 curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 2; }
done
# shellcheck disable=SC2119 # no examples
build_release
# This script and its drivers on CPU 0; the server goes to CPU 1.
taskset -cp 0 $$ >/dev/null

# On exit lib.sh's cleanup stops the helpers (SIPp under `timeout`, the CANCEL caller, the
# drivers and the sampler) and the server, then keeps or removes the work directory.
if [ -n "${SOAK_KEEP:-}" ]; then LOAD_KEEP=1; fi
work_dir

# Passcodes of seven digits: no process id, port or Call-ID number of this run can spell
# them, so finding one in the log is a leak, not a coincidence.
pin=4882610      # permanent, and the temporary one given to the change groups
new_pin=5993720  # what the change groups choose
wrong=9753186    # what the lockout group keys

# ---- provisioning
token=$("$vportal" init --token-name soak 2>init.err | grep -o 'vpt_[0-9a-f]*')
pepper=$(cat vportal.pepper)
# Mailbox blocks, apart for any duration up to 7200 s: the change and hang-up groups use
# one mailbox a call, the admin API (at most 2/s) and the CLI (1/s) one an iteration.
login_first=10000; login_count=200
wrong_first=10500; wrong_count=50
change_first=11000; change_count=$((duration * 2 + 20))   # to 25419
hangup_first=30000; hangup_count=$((duration + 20))       # to 37219
admin_first=50000; admin_block=25000
cli_first=75000; cli_block=25000
permanent() {
  # shellcheck disable=SC2016 # the inner shell expands them
  seq "$1" $(($1 + $2 - 1)) | xargs -P 2 -I{} sh -c 'printf %s "$2" | "$1" user add {} --passcode-stdin >/dev/null' _ "$vportal" "$pin"
}
permanent "$login_first" "$login_count"
permanent "$wrong_first" "$wrong_count"
# An import makes every passcode temporary (the policy's TTL, 72 h).
{ echo extension,name,email,passcode
  for e in $(seq "$change_first" $((change_first + change_count - 1))) $(seq "$hangup_first" $((hangup_first + hangup_count - 1))); do
    echo "$e,,,$pin"
  done; } >temporary.csv
"$vportal" user import temporary.csv >/dev/null
# SIPp injection files: the mailbox's digits as fields 0-4.
inject() { { echo "$1"; seq "$2" $(($2 + $3 - 1)) | sed 's/./&;/g'; } >"$4"; }
inject SEQUENTIAL "$login_first" "$login_count" login.csv
inject RANDOM "$wrong_first" "$wrong_count" wrong.csv
inject SEQUENTIAL "$change_first" "$change_count" change.csv
inject SEQUENTIAL "$hangup_first" "$hangup_count" hangup.csv

# ---- SIPp scenarios, made here from a few pieces
# invite: the INVITE, with PCMU and telephone-event.
invite() {
  cat <<'XML'
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=ptime:20

    ]]>
  </send>
XML
}
# request METHOD CSEQ [BODY_LINE...]: an in-dialog request.
request() {
  local method="$1" cseq="$2"; shift 2
  echo "  <send><![CDATA["
  echo
  echo "      $method sip:[service]@[remote_ip]:[remote_port] SIP/2.0"
  echo "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
  echo "      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]"
  echo "      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]"
  echo "      Call-ID: [call_id]"
  echo "      CSeq: $cseq $method"
  echo "      Contact: <sip:sipp@[local_ip]:[local_port]>"
  echo "      Max-Forwards: 70"
  if [ $# -gt 0 ]; then
    echo "      Content-Type: application/dtmf-relay"
    echo "      Content-Length: [len]"
    echo
    for line in "$@"; do echo "      $line"; done
  else
    echo "      Content-Length: 0"
  fi
  echo
  echo "  ]]></send>"
}
answered() {
  echo '  <recv response="100" optional="true"/>'
  echo '  <recv response="180" optional="true"/>'
  echo '  <recv response="200"/>'
  request ACK 1
}
# keys KEY...: one INFO per key, each answered 200; a key is a digit, # or *, or `mailbox`
# for the injection file's five digits. Sets $cseq to the next CSeq.
keys() {
  cseq=2
  local key k c
  for key in "$@"; do
    local chars=()
    if [ "$key" = mailbox ]; then
      chars=("[field0]" "[field1]" "[field2]" "[field3]" "[field4]")
    else
      for ((c = 0; c < ${#key}; c++)); do chars+=("${key:c:1}"); done
    fi
    for k in "${chars[@]}"; do
      request INFO "$cseq" "Signal=$k" "Duration=100"
      echo '  <recv response="200"/>'
      cseq=$((cseq + 1))
    done
  done
}
their_bye() {
  echo '  <recv request="BYE" timeout="30000"/>'
  cat <<'XML'
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Content-Length: 0

  ]]></send>
XML
}
our_bye() {
  request BYE "$1"
  echo '  <recv response="200"/>'
}
scenario() {
  local name="$1"; shift
  { echo '<?xml version="1.0" encoding="ISO-8859-1" ?>'
    echo "<scenario name=\"soak $name\">"
    "$@"
    echo '</scenario>'; } >"$name.xml"
}
login_flow() { invite; answered; keys mailbox "#$pin#" '*'; their_bye; }
change_flow() { invite; answered; keys mailbox "#$pin#" "$new_pin#" "$new_pin#" '*'; their_bye; }
hangup_flow() {
  invite; answered; keys mailbox "#$pin#" "$new_pin#" "$new_pin#"
  echo '  <pause distribution="uniform" min="0" max="1500"/>'
  our_bye "$cseq"
}
wrong_flow() {
  invite; answered; keys mailbox "#$wrong#"
  echo '  <pause milliseconds="300"/>'
  our_bye "$cseq"
}
midprompt_flow() {
  invite; answered
  echo '  <pause distribution="uniform" min="100" max="3000"/>'
  our_bye 2
}
scenario login login_flow
scenario change change_flow
scenario hangup hangup_flow
scenario wrong wrong_flow
scenario midprompt midprompt_flow
cp login.xml login-tcp.xml

# ---- the server
# The drivers' fixed ports (SIPp 11150-11155, its media 11200-11253, the CANCEL caller 11156
# and its SDP's 11260) and the server's RTP range: below 32768, so no ephemeral socket takes
# them; checked free.
ports_free "the start" 11150 11260
ports_free "the start" 12000 13999
wrap=()
if [ -n "${SOAK_HEAPTRACK:-}" ]; then
  command -v heaptrack >/dev/null || { echo "install heaptrack" >&2; exit 2; }
  wrap=(heaptrack -o "$SOAK_HEAPTRACK")
fi
RUST_LOG=info "${guard[@]}" taskset -c 1 "${wrap[@]}" "$vportal" serve --sip 127.0.0.1:0 --admin 127.0.0.1:0 \
  --rtp-ports 12000-13999 --prompts "$root/prompts" >serve.out 2>serve.log 9>&- &
# What the script started (heaptrack, when wrapped) and the server itself.
launcher=$!
pid=$launcher
if [ ${#wrap[@]} -gt 0 ]; then
  pid=""
  for _ in $(seq 1 100); do pid=$(pgrep -P "$launcher" -x vportal || true); [ -n "$pid" ] && break; sleep 0.1; done
  [ -n "$pid" ] || { echo "vportal did not start under heaptrack" >&2; exit 1; }
fi
sip=$(listening sip)
admin=$(listening admin)
sip_port=${sip##*:}
echo "vportal sip=$sip admin=$admin (pid $pid, CPU 1); drivers on CPU 0; $duration s"

start=$(date +%s)
deadline=$((start + duration))
# Every request gives up after 10 s (lib.sh's curl_opts): a hung admin port is a failed request.
# Neither fails: a request that got no answer is code 000 (which the admin driver records as
# unexpected), a metric that could not be read is "?" (which the checks fail on); under
# `set -e` a failing one would end the driver, or the script, without a word.
api() { curl "${curl_opts[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$@" || true; }
metric() { { curl "${curl_opts[@]}" "http://$admin/metrics" || true; } | awk -v m="$1" '$1 == m { print $2 + 0; found = 1 } END { if (!found) print "?" }'; }
wal_size() { stat -c %s vportal.db-wal 2>/dev/null || echo 0; }

# ---- sampling
sampler() {
  echo -e "t\trss_kb\tfds\tthreads\twal_bytes\tcalls_active\tphase" >samples.tsv
  while [ ! -e stop-sampler ]; do
    local now phase=load
    now=$(($(date +%s) - start))
    [ -e load-done ] && phase=after
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$now" \
      "$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")" \
      "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)" \
      "$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")" \
      "$(wal_size)" "$(metric vportal_calls_active)" "$phase" >>samples.tsv
    sleep 5
  done
}
helper sampler

# ---- CANCEL before the answer: SIPp cannot send a CANCEL until the 100 has come, by when
# the call is answered, so a small UDP caller sends INVITE and CANCEL back to back, 1/s.
# It writes `cancelled ANSWERED FAILED` to cancel.out: 487s, calls answered anyway (ended
# with BYE), calls that got neither within 10 s. It stops at its own deadline (30 s after the
# last call is due; `timeout` gives it 60 s), whatever the server does.
canceller() {
  cat >cancel.py <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
server, calls = (host, int(port)), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 11156))
s.settimeout(0.5)
me = "127.0.0.1:11156"
sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 11260 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
def req(method, cid, branch, cseq, to_tag="", body=""):
    to = f"<sip:8500@{host}>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{method} sip:8500@{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch={branch}\r\n"
            f"From: <sip:c@127.0.0.1>;tag=f{cid}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:c@{me}>\r\nMax-Forwards: 70\r\n")
    if body:
        head += "Content-Type: application/sdp\r\n"
    s.sendto((head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode(), server)
def header(msg, name):
    for line in msg.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""
cancelled = answered = failed = 0
start = time.time()
deadline = start + calls + 30
for n in range(calls):
    if time.time() > deadline:
        failed += calls - n
        break
    time.sleep(max(0, start + n - time.time()))
    cid, branch = f"cancel-{n}-{start:.0f}", f"z9hG4bKc{n}x{start:.0f}"
    req("INVITE", cid, branch, "1", body=sdp)
    req("CANCEL", cid, branch, "1")
    until, done, bye_sent = min(time.time() + 10, deadline), False, False
    while not done and time.time() < until:
        try:
            msg = s.recv(65536).decode(errors="replace")
        except socket.timeout:
            continue
        if header(msg, "Call-ID") != cid:
            continue
        status, cseq = msg.split(" ", 2)[1], header(msg, "CSeq")
        tag = header(msg, "To").split("tag=")[-1] if "tag=" in header(msg, "To") else ""
        if msg.startswith("BYE"):
            continue
        if cseq.endswith("INVITE") and status == "487":
            req("ACK", cid, branch, "1", tag)
            cancelled += 1; done = True
        elif cseq.endswith("INVITE") and status == "200" and not bye_sent:
            req("ACK", cid, branch + "a", "1", tag)
            req("BYE", cid, branch + "b", "2", tag)
            bye_sent = True
        elif cseq.endswith("BYE"):
            answered += 1; done = True
    if not done:
        failed += 1
print(cancelled, answered, failed)
PY
  # (A helper's standard input is /dev/null: the script goes in a file.)
  helper timeout $((duration + 60)) python3 cancel.py "$sip" "$duration" >cancel.out 2>cancel.err
}

# ---- calls
sipp_run() {  # NAME RATE CALLS [SIPp args...]: started as a helper, its PID in sipp_pids
  local name="$1" rate="$2" calls="$3"; shift 3
  helper taskset -c 0 timeout $((duration + 120)) sipp "$sip" -sf "$name.xml" -s 8500 -i 127.0.0.1 \
    -nostdin -r "$rate" -m "$calls" -timeout $((duration + 90))s -max_retrans 5 \
    -trace_stat -stf "stat-$name.csv" -fd 3600 -trace_err -error_file "err-$name.log" \
    "$@" >"sipp-$name.out" 2>&1
  sipp_pids+=("$helper")
}
sipp_pids=()
sipp_run login 5 $((duration * 5)) -inf login.csv -p 11150 -mp 11200
sipp_run login-tcp 1 "$duration" -t tn -max_socket 1000 -inf login.csv -p 11151 -mp 11210
sipp_run change 2 $((duration * 2)) -inf change.csv -p 11152 -mp 11220
sipp_run hangup 1 "$duration" -inf hangup.csv -p 11153 -mp 11230
sipp_run wrong 2 $((duration * 2)) -inf wrong.csv -p 11154 -mp 11240
sipp_run midprompt 1 "$duration" -p 11155 -mp 11250
canceller
sipp_pids+=("$helper")

# ---- admin API: mailboxes from $admin_first, and unlocks of the lockout group
admin_driver() {
  local i=0 code
  : >admin-created; : >admin-deleted; : >admin-errors
  expect() {  # EXPECTED CODE WHAT
    [ "$2" = "$1" ] || echo "$3: $2 (expected $1)" >>admin-errors
  }
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local ext=$((admin_first + i))
    code=$(api -H 'Content-Type: application/json' -d "{\"extension\":\"$ext\"}" "http://$admin/api/v1/users")
    expect 201 "$code" "create $ext"; [ "$code" = 201 ] && echo "$ext" >>admin-created
    expect 200 "$(api "http://$admin/api/v1/users/$ext")" "show $ext"
    expect 200 "$(api -X POST "http://$admin/api/v1/users/$ext/passcode")" "reset $ext"
    if [ $((i % 3)) = 2 ]; then
      code=$(api -X DELETE "http://$admin/api/v1/users/$((ext - 1))")
      expect 204 "$code" "delete $((ext - 1))"; [ "$code" = 204 ] && echo $((ext - 1)) >>admin-deleted
    fi
    if [ $((i % 5)) = 0 ]; then
      expect 200 "$(api -X POST "http://$admin/api/v1/users/$((wrong_first + RANDOM % wrong_count))/unlock")" unlock
      expect 200 "$(api -H 'Content-Type: application/json' -d "{\"extensions\":[\"$ext\"],\"ttl_seconds\":3600}" "http://$admin/api/v1/users/reset")" "bulk reset $ext"
    fi
    expect 200 "$(api "http://$admin/api/v1/users?locked=true")" "list locked"
    expect 200 "$(api "http://$admin/api/v1/audit?limit=200")" audit
    expect 200 "$(api "http://$admin/api/v1/audit?extension=$((wrong_first + RANDOM % wrong_count))&limit=50")" "audit ext"
    expect 200 "$(api "http://$admin/api/v1/report")" report
    expect 200 "$(api "http://$admin/api/v1/calls")" calls
    expect 200 "$(curl "${curl_opts[@]}" -o /dev/null -w '%{http_code}' "http://$admin/metrics")" metrics
    i=$((i + 1))
    sleep 0.5
  done
}
helper admin_driver
driver_pids=("$helper")

# ---- CLI: mailboxes from $cli_first, unlocks of the lockout group
cli_driver() {
  local j=0
  : >cli-created; : >cli-deleted; : >cli-errors
  run() {  # WHAT COMMAND...
    local what="$1"; shift
    "$@" >/dev/null 2>>cli-stderr </dev/null || echo "$what: exit $?" >>cli-errors
  }
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local ext=$((cli_first + j))
    if "$vportal" user add "$ext" --generate >/dev/null 2>>cli-stderr; then echo "$ext" >>cli-created; else echo "add $ext: exit $?" >>cli-errors; fi
    run "show $ext" "$vportal" user show "$ext"
    run "set-temp $ext" "$vportal" user set-temp "$ext" --ttl 1h
    run "list locked" "$vportal" user list --locked
    run "audit" "$vportal" audit --limit 500
    run "audit ext" "$vportal" audit --extension "$((wrong_first + RANDOM % wrong_count))" --limit 50
    run report "$vportal" report
    if [ $((j % 2)) = 1 ]; then
      if "$vportal" user delete $((ext - 1)) >/dev/null 2>>cli-stderr; then echo $((ext - 1)) >>cli-deleted; else echo "delete $((ext - 1)): exit $?" >>cli-errors; fi
    fi
    if [ $((j % 4)) = 0 ]; then
      run unlock "$vportal" user unlock "$((wrong_first + RANDOM % wrong_count))"
      run "token list" "$vportal" token list
      run "policy show" "$vportal" policy show
    fi
    j=$((j + 1))
    sleep 1
  done
}
helper cli_driver
driver_pids+=("$helper")

# ---- garbage
# udp PORT: standard input as one datagram. (Bash's printf writes line by line, and to
# /dev/udp every write is a datagram of its own; cat writes the file in one.)
udp() { cat >garbage.tmp; cat garbage.tmp >"/dev/udp/127.0.0.1/$1"; }
garbage_driver() {
  local n=0 port sdp
  sdp='v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n'
  while [ "$(date +%s)" -lt "$deadline" ]; do
    case $((n % 6)) in
      0) printf 'INVITE sip:8500@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx%s\r\nContent-Length: 9999\r\n\r\nv=0' "$n" | udp "$sip_port" ;;
      1) head -c 300 /dev/urandom | udp "$sip_port" ;;
      2) printf 'SIP/2.0 200 OK\r\nCall-ID: stray-%s\r\nCSeq: 1 INVITE\r\n\r\n' "$n" | udp "$sip_port" ;;
      3) printf 'BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bKb%s\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: nope-%s\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n' "$n" "$n" | udp "$sip_port" ;;
      4) { printf 'OPTIONS sip:x SIP/2.0\r\nContent-Length: abc\r\n\r\n'; head -c 100 /dev/urandom; } >"/dev/tcp/127.0.0.1/$sip_port" 2>/dev/null || true ;;
      5) printf 'INV@TE sip:8500@127.0.0.1 SIP/2.0\r\n\r\n' | udp "$sip_port" ;;
    esac
    # Every 20th round, an INVITE from a forged source that never ACKs: vportal answers
    # into the void, retransmits its 200 and ends the call with BYE after 64*T1 (32 s).
    if [ $((n % 20)) = 7 ]; then
      # shellcheck disable=SC2059 # the SDP's escapes are printf's to expand
      printf "INVITE sip:8500@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnoack$n\r\nFrom: <sip:x@127.0.0.1>;tag=n$n\r\nTo: <sip:8500@127.0.0.1>\r\nCall-ID: noack-$n-$start\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:9>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n$sdp" "$(printf "$sdp" | wc -c)" | udp "$sip_port"
    fi
    # RTP from a stranger to an RTP port: random bytes, or an RFC 4733 event for key 1.
    port=$((12000 + 2 * (RANDOM % 1000)))
    if [ $((n % 2)) = 0 ]; then
      head -c 172 /dev/urandom | udp "$port"
    else
      printf '\x80\xe5\x00\x01\x00\x00\x10\x00\x12\x34\x56\x78\x01\x8a\x03\x20' | udp "$port"
    fi
    n=$((n + 1))
    sleep 0.3
  done
  echo "$n" >garbage-sent
}
helper garbage_driver
driver_pids+=("$helper")

# ---- wait for the load to end
progress() { printf '%5ss rss %s kB, fds %s, threads %s, wal %s B, active %s\n' "$(($(date +%s) - start))" \
  "$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")" "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)" \
  "$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")" "$(wal_size)" "$(metric vportal_calls_active)"; }
while [ "$(date +%s)" -lt "$deadline" ]; do
  # (A helper: a SIGINT or SIGTERM ends the nap, and the script, at once.)
  nap 30
  progress
done
# SIPp finishes its last calls (each takes seconds), the drivers their last round. (SIPp
# exits 1 when a call failed: the checks below count those.)
for p in "${sipp_pids[@]}"; do wait "$p" || true; done
# A driver that ended before its deadline (an error under `set -e`) left its load out: the
# check below says so, rather than the checks passing on less load.
drivers_failed=0
for p in "${driver_pids[@]}"; do wait "$p" || drivers_failed=$((drivers_failed + 1)); done
touch load-done
# The calls still ending leave the gauge within seconds; a forged INVITE's within 32 s.
active="?"
for _ in $(seq 1 45); do
  active=$(metric vportal_calls_active)
  [ "$active" = 0 ] && break
  sleep 1
done
nap 10
touch stop-sampler; wait_sampler=0
while ! tail -n 1 samples.tsv | grep -q after && [ "$wait_sampler" -lt 10 ]; do sleep 1; wait_sampler=$((wait_sampler + 1)); done
curl "${curl_opts[@]}" "http://$admin/metrics" >metrics.txt || echo "soak: GET /metrics failed (exit $?): the metrics checks will fail" >&2
integrity_live=$(sqlite3 -readonly vportal.db 'PRAGMA integrity_check')

# The server stops gracefully.
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then stopped=no; else stopped=yes; fi
# A server that ignored SIGTERM is killed (the check below fails), so that `wait` ends.
if [ "$stopped" = no ]; then
  echo "soak: the server did not stop within 10 s of SIGTERM; SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
fi
# (heaptrack waits for the server, then writes its profile, and exits with its status;
# given 60 s for that, then killed too.)
for _ in $(seq 1 600); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$launcher" 2>/dev/null || true
wait "$launcher" 2>/dev/null && server_exit=0 || server_exit=$?
pid=""
integrity=$(sqlite3 vportal.db 'PRAGMA integrity_check')

# ---- checks
failures=0
rows=()
check() {  # NAME OK(yes/no) DETAIL
  rows+=("$(printf '%-44s %-4s %s' "$1" "$([ "$2" = yes ] && echo ok || echo FAIL)" "$3")")
  [ "$2" = yes ] || failures=$((failures + 1))
}
stat_col() {  # NAME COLUMN: the last value of a SIPp statistics column
  awk -F';' -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next } { v = $k } END { print v + 0 }' "stat-$1.csv" 2>/dev/null || echo 0
}
q() { sqlite3 -readonly vportal.db "$1"; }
range() { echo "CAST(extension AS INTEGER) BETWEEN $1 AND $(($1 + $2 - 1))"; }

# Leaks: the load phase split in thirds; the last may not rise over the middle one by more
# than the margin (a linear leak rises a third of its total from one to the next).
third_max() {  # COLUMN WHICH(2|3)
  awk -F'\t' -v c="$1" -v w="$2" 'NR > 1 && $7 == "load" { v[++n] = $c } END {
    lo = (w == 2) ? int(n / 3) + 1 : int(2 * n / 3) + 1; hi = (w == 2) ? int(2 * n / 3) : n
    m = 0; for (i = lo; i <= hi; i++) if (v[i] + 0 > m) m = v[i] + 0; print m }' samples.tsv
}
first_load() { awk -F'\t' -v c="$1" 'NR > 1 && $7 == "load" { print $c; exit }' samples.tsv; }
last_load() { awk -F'\t' -v c="$1" 'NR > 1 && $7 == "load" { v = $c } END { print v }' samples.tsv; }
max_col() { awk -F'\t' -v c="$1" 'NR > 1 { if ($c + 0 > m) m = $c + 0 } END { print m + 0 }' samples.tsv; }
# The least-squares slope of a column over the last two thirds of the load, per minute: what
# the thirds' margin lets through depends on how far apart they are (in a 600 s run, ~200 s:
# a steady leak of up to about 0.8 MB a minute passes), so the detail shows it.
slope() {  # COLUMN
  awk -F'\t' -v c="$1" 'NR > 1 && $7 == "load" { t[++n] = $1; v[n] = $c } END {
    for (i = int(n / 3) + 1; i <= n; i++) { k++; sx += t[i]; sy += v[i]; sxx += t[i] * t[i]; sxy += t[i] * v[i] }
    d = k * sxx - sx * sx; if (k < 2 || d == 0) { print "?"; exit }
    printf "%.0f", (k * sxy - sx * sy) / d * 60 }' samples.tsv
}
rss2=$(third_max 2 2); rss3=$(third_max 2 3)
check "RSS levels out (max, middle -> last third)" "$([ "$rss3" -le $((rss2 + rss2 / 20 + 1024)) ] && echo yes || echo no)" \
  "$(first_load 2) kB at start; $rss2 -> $rss3 kB; $(last_load 2) kB at the end; last two thirds $(slope 2) kB/min"
fd2=$(third_max 3 2); fd3=$(third_max 3 3)
check "open fds level out" "$([ "$fd3" -le $((fd2 + 8)) ] && echo yes || echo no)" \
  "$(first_load 3) at start; $fd2 -> $fd3; after the load $(awk -F'\t' '$7 == "after" { v = $3 } END { print v }' samples.tsv)"
th2=$(third_max 4 2); th3=$(third_max 4 3)
check "threads level out" "$([ "$th3" -le $((th2 + 8)) ] && echo yes || echo no)" \
  "$(first_load 4) at start; $th2 -> $th3; after the load $(awk -F'\t' '$7 == "after" { v = $4 } END { print v }' samples.tsv)"
wal2=$(third_max 5 2); wal3=$(third_max 5 3); walmax=$(max_col 5)
check "WAL bounded (checkpoints happen)" "$([ "$walmax" -le $((16 << 20)) ] && [ "$wal3" -le $((wal2 + (1 << 20))) ] && echo yes || echo no)" \
  "max $walmax B; middle -> last third $wal2 -> $wal3 B"
check "integrity_check (server running, stopped)" "$([ "$integrity_live" = ok ] && [ "$integrity" = ok ] && echo yes || echo no)" "$integrity_live, $integrity"
check "calls_active back to 0 after the load" "$([ "$active" = 0 ] && echo yes || echo no)" "$active; peak $(max_col 6)"
check "server stops on SIGTERM, status 0" "$([ "$stopped" = yes ] && [ "$server_exit" = 0 ] && echo yes || echo no)" "exit $server_exit"

# SIPp: what each driver saw.
sipp_ok=0; sipp_failed=0
summary=""
declare -A ok failed
read -r cancelled cancel_answered cancel_failed <cancel.out || { cancelled=0; cancel_answered=0; cancel_failed=1; }
ok[cancel]=$((cancelled + cancel_answered)); failed[cancel]=$cancel_failed
for name in login login-tcp change hangup wrong midprompt; do
  ok[$name]=$(stat_col "$name" 'SuccessfulCall(C)'); failed[$name]=$(stat_col "$name" 'FailedCall(C)')
  summary+="$name ${ok[$name]}/${failed[$name]} "
  sipp_ok=$((sipp_ok + ok[$name])); sipp_failed=$((sipp_failed + failed[$name]))
done
summary+="cancel ${ok[cancel]}/${failed[cancel]} ($cancelled got 487)"
sipp_ok=$((sipp_ok + ok[cancel])); sipp_failed=$((sipp_failed + failed[cancel]))
declare -A planned=([login]=$((duration * 5)) [login-tcp]=$duration [change]=$((duration * 2)) [hangup]=$duration
  [wrong]=$((duration * 2)) [midprompt]=$duration [cancel]=$duration)
short=""
for name in "${!planned[@]}"; do
  [ $((ok[$name] + failed[$name])) = "${planned[$name]}" ] || short+="$name $((ok[$name] + failed[$name]))/${planned[$name]} "
done
check "every call planned was placed" "$([ -z "$short" ] && echo yes || echo no)" "${short:-$((sipp_ok + sipp_failed)) calls}"
check "calls failed (none)" "$([ "$sipp_failed" = 0 ] && echo yes || echo no)" "ok/failed: $summary"

# Store against drivers.
logins=$(q "SELECT count(*) FROM audit WHERE event = 'login.success' AND $(range "$login_first" "$login_count")")
check "logins audited = successful login calls" "$([ "$logins" = $((ok[login] + ok[login-tcp])) ] && echo yes || echo no)" "$logins audited, $((ok[login] + ok[login-tcp])) calls"
bad_login=$(q "SELECT count(*) FROM users WHERE $(range "$login_first" "$login_count") AND (temporary != 0 OR failed_attempts != 0 OR locked_until IS NOT NULL OR locked_permanently != 0)")
check "login mailboxes untouched" "$([ "$bad_login" = 0 ] && echo yes || echo no)" "$bad_login in another state"
changed=$(q "SELECT count(*) FROM audit WHERE event = 'passcode.changed' AND $(range "$change_first" "$change_count")")
changed_users=$(q "SELECT count(*) FROM users WHERE $(range "$change_first" "$change_count") AND temporary = 0")
check "changes audited = successful change calls" "$([ "$changed" = "${ok[change]}" ] && echo yes || echo no)" "$changed audited, ${ok[change]} calls"
check "changed mailboxes not temporary, others are" "$([ "$changed_users" = "$changed" ] && echo yes || echo no)" "$changed_users not temporary"
hung=$(q "SELECT count(*) FROM audit WHERE event = 'passcode.changed' AND $(range "$hangup_first" "$hangup_count")")
hung_users=$(q "SELECT count(*) FROM users WHERE $(range "$hangup_first" "$hangup_count") AND temporary = 0")
hung_twice=$(q "SELECT count(*) FROM (SELECT extension FROM audit WHERE event = 'passcode.changed' AND $(range "$hangup_first" "$hangup_count") GROUP BY extension HAVING count(*) > 1)")
check "hung-up changes: stored ones not temporary" "$([ "$hung_users" = "$hung" ] && [ "$hung_twice" = 0 ] && echo yes || echo no)" "$hung changed of ${ok[hangup]} calls, $hung_users not temporary"
wrongs=$(q "SELECT count(*) FROM audit WHERE event IN ('login.failure', 'login.locked') AND $(range "$wrong_first" "$wrong_count")")
locks=$(q "SELECT count(*) FROM audit WHERE event = 'user.locked' AND $(range "$wrong_first" "$wrong_count")")
check "wrong passcodes audited = wrong calls" "$([ "$wrongs" = "${ok[wrong]}" ] && echo yes || echo no)" "$wrongs audited, ${ok[wrong]} calls; $locks locks"
# Replay the audit trail per mailbox: failures count up to max_failures (5), which locks (the
# count stays at 5 while the lock holds; none ends within a run); a success, unlock, admin
# reset or creation clears both. The result must be the users table, and no failure may be
# counted while locked.
replay=$(q "SELECT a.extension, a.event FROM audit a WHERE a.extension IS NOT NULL AND a.extension != '' ORDER BY a.id" | awk -F'|' '
  $2 == "login.failure" { if (locked[$1]) bad++; fails[$1]++ }
  $2 == "user.locked" { if (fails[$1] != 5) bad++; locked[$1] = 1 }
  $2 == "login.locked" { if (!locked[$1]) bad++ }
  $2 == "login.success" { if (locked[$1]) bad++; fails[$1] = 0 }
  $2 == "user.unlocked" || $2 == "passcode.temporary_set" || $2 == "user.created" { fails[$1] = 0; locked[$1] = 0 }
  $2 == "user.deleted" { delete fails[$1]; delete locked[$1] }
  END { for (e in fails) print "replay", e, fails[e], locked[e] + 0; print "bad", bad + 0 }')
table=$(q "SELECT 'replay', extension, failed_attempts, (locked_until IS NOT NULL OR locked_permanently != 0) FROM users" | tr '|' ' ')
mismatch=$(comm -3 <(grep '^replay' <<<"$replay" | sort) <(sort <<<"$table") | wc -l)
bad_seq=$(awk '$1 == "bad" { print $2 }' <<<"$replay")
check "failures and locks = audit trail replayed" "$([ "$mismatch" = 0 ] && [ "$bad_seq" = 0 ] && echo yes || echo no)" "$mismatch mailboxes differ, $bad_seq events out of order"
admin_left=$(q "SELECT count(*) FROM users WHERE $(range "$admin_first" "$admin_block")")
admin_expect=$(($(wc -l <admin-created) - $(wc -l <admin-deleted)))
check "load drivers (admin, CLI, garbage) ran to the end" "$([ "$drivers_failed" = 0 ] && echo yes || echo no)" "$drivers_failed of ${#driver_pids[@]} ended early"
check "admin API: answers as expected" "$([ ! -s admin-errors ] && echo yes || echo no)" "$(wc -l <admin-created) created, $(wc -l <admin-deleted) deleted; $(wc -l <admin-errors) unexpected $(head -n 3 admin-errors | tr '\n' ';')"
check "admin API mailboxes = created - deleted" "$([ "$admin_left" = "$admin_expect" ] && echo yes || echo no)" "$admin_left (expected $admin_expect)"
cli_left=$(q "SELECT count(*) FROM users WHERE $(range "$cli_first" "$cli_block")")
cli_expect=$(($(wc -l <cli-created) - $(wc -l <cli-deleted)))
check "CLI: every command succeeded" "$([ ! -s cli-errors ] && echo yes || echo no)" "$(wc -l <cli-created) created, $(wc -l <cli-deleted) deleted; $(wc -l <cli-errors) failed $(head -n 3 cli-errors | tr '\n' ';')"
check "CLI mailboxes = created - deleted" "$([ "$cli_left" = "$cli_expect" ] && echo yes || echo no)" "$cli_left (expected $cli_expect)"

# Metrics against the audit trail (every login and change in this run came from a call).
m() { awk -v k="$1" 'index($0, k " ") == 1 { print $NF + 0; f = 1 } END { if (!f) print 0 }' metrics.txt; }
audit_count() { q "SELECT count(*) FROM audit WHERE event = '$1' AND actor = 'caller'"; }
m_ok=$(( $(m 'vportal_logins_total{outcome="ok"}') + $(m 'vportal_logins_total{outcome="ok_temporary"}') ))
check "logins_total{ok,ok_temporary} = login.success" "$([ "$m_ok" = "$(audit_count login.success)" ] && echo yes || echo no)" "$m_ok / $(audit_count login.success)"
m_wrong=$(( $(m 'vportal_logins_total{outcome="wrong"}') + $(m 'vportal_logins_total{outcome="unknown"}') ))
check "logins_total{wrong,unknown} = login.failure" "$([ "$m_wrong" = "$(audit_count login.failure)" ] && echo yes || echo no)" "$m_wrong / $(audit_count login.failure)"
m_locked=$(m 'vportal_logins_total{outcome="locked"}')
check "logins_total{locked} = login.locked" "$([ "$m_locked" = "$(audit_count login.locked)" ] && echo yes || echo no)" "$m_locked / $(audit_count login.locked)"
m_lockouts=$(m vportal_lockouts_total)
check "lockouts_total = user.locked" "$([ "$m_lockouts" = "$(audit_count user.locked)" ] && echo yes || echo no)" "$m_lockouts / $(audit_count user.locked)"
m_changed=$(m 'vportal_passcode_changes_total{outcome="changed"}')
m_calls_changed=$(m 'vportal_calls_total{outcome="changed"}')
check "changes_total, calls_total{changed} = passcode.changed" "$([ "$m_changed" = "$(audit_count passcode.changed)" ] && [ "$m_calls_changed" = "$m_changed" ] && echo yes || echo no)" "$m_changed, $m_calls_changed / $(audit_count passcode.changed)"
calls_total=$(awk '/^vportal_calls_total\{/ { s += $NF } END { print s + 0 }' metrics.txt)
garbage=$(cat garbage-sent 2>/dev/null || echo 0)
noack=$(((garbage + 12) / 20))
check "calls_total counts every call" "$([ "$calls_total" = $((sipp_ok + sipp_failed + noack)) ] && echo yes || echo no)" "$calls_total / $((sipp_ok + sipp_failed)) placed + $noack never ACKed"

# The log.
errors=$(grep -cE '\bERROR\b|panicked' serve.log || true)
check "no ERROR or panic in the log" "$([ "$errors" = 0 ] && echo yes || echo no)" "$errors lines; $(grep -c '\bWARN\b' serve.log || true) WARN lines; $(wc -l <serve.log) lines"
secrets=0
for s in "$token" "$pepper" "$pin" "$new_pin" "$wrong"; do
  if grep -qF -- "$s" serve.log; then secrets=$((secrets + 1)); fi
done
check "no secret in the log (token, pepper, passcodes)" "$([ "$secrets" = 0 ] && echo yes || echo no)" "$secrets found"

echo
echo "soak: $duration s, calls ok/failed by scenario: $summary; garbage sent $garbage ($noack INVITEs never ACKed)"
awk -F'\t' 'NR == 1 || (NR - 2) % 12 == 0 || $7 == "after"' samples.tsv | column -t
echo
printf '%-44s %-4s %s\n' check "" detail
printf '%s\n' "${rows[@]}"
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
