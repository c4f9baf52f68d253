# shellcheck shell=bash
# Shared by the load scripts (sourced, not run): provisioning, waiting for the server,
# starting helpers so that they can be stopped, and cleaning up.

# Every curl of the scripts: a hung admin port turns into a failed request, not a stuck run.
# shellcheck disable=SC2034 # used by the scripts that source this file
curl_opts=(--silent --connect-timeout 2 --max-time 10)

# Every script pins the server to CPU 1 and its load to CPU 0 (the fair split of a 2-core
# machine): say so at once on a machine without both.
if ! taskset -c 0,1 true 2>/dev/null; then
  echo "the load scripts need CPUs 0 and 1 (the server on one, the load on the other);" \
    "this machine offers: $(taskset -cp $$ 2>/dev/null | sed 's/.*: //')" >&2
  exit 2
fi

# Put before the server's command: it gets SIGTERM when the script dies, even by SIGKILL or
# the OOM killer, whose EXIT trap never runs and would leave it holding its ports
# (setpriv's --pdeathsig, util-linux 2.33 and later).
guard=()
if setpriv --help 2>/dev/null | grep -q -- --pdeathsig; then guard=(setpriv --pdeathsig TERM); fi

# What a script started and must stop on exit: the server ($pid) and helpers (helpers: the
# PIDs from `helper`, each the leader of its own process group when run under `timeout`).
pid=""
helpers=()

# helper CMD...: runs CMD in the background, records its PID for cleanup and sets $helper to
# it. `timeout` (the usual CMD, after `taskset`, which execs it) puts itself and the tool in
# a process group of its own that a Ctrl-C on the terminal does not reach: cleanup signals
# that group. Wait for it with `wait "$helper"`: bash runs its INT/TERM traps at once while
# in `wait`, but only after a foreground command has ended. Its standard input is /dev/null
# (bash's rule for a background command), whatever the call redirects; it does not hold
# the load lock (fd 9), so that nothing left over from one run can hold up the next.
helper() {
  "$@" 9>&- &
  helper=$!
  helpers+=("$helper")
}

# nap SECONDS: sleeps as a helper, so that a signal ends the script at once (bash runs its
# traps only after a foreground command ends) and cleanup stops the sleep.
nap() {
  helper sleep "$1"
  wait "$helper" || true
}

# ours PID: whether PID is still a running child of this shell (not a helper that ended,
# whose PID another process may have been given since).
ours() {
  local stat f
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  read -r -a f <<<"${stat##*) }"  # state, ppid, pgrp, …
  [ "${f[0]}" != Z ] && [ "${f[1]}" = "$$" ]
}

# signal_helper SIGNAL PID: SIGNAL to the helper PID and, when it leads a process group of
# its own (`timeout`), to that group.
signal_helper() {
  local stat f
  ours "$2" || return 0
  stat=$(cat "/proc/$2/stat" 2>/dev/null) || return 0
  read -r -a f <<<"${stat##*) }"
  if [ "${f[2]}" = "$2" ]; then kill "-$1" -- "-$2" 2>/dev/null || true; fi
  kill "-$1" "$2" 2>/dev/null || true
}

# stop_helpers: TERM to every helper still running (and its process group; `timeout`
# passes TERM on to its tool), up to 5 s for them to go, then KILL.
stop_helpers() {
  local p i alive
  [ ${#helpers[@]} -gt 0 ] || return 0
  for p in "${helpers[@]}"; do signal_helper TERM "$p"; done
  for i in $(seq 1 50); do
    alive=0
    for p in "${helpers[@]}"; do if ours "$p"; then alive=1; fi; done
    [ "$alive" = 0 ] && break
    [ "$i" = 50 ] || sleep 0.1
  done
  for p in "${helpers[@]}"; do signal_helper KILL "$p"; done
  helpers=()
}

# stop_server: TERM to the server ($pid), up to 10 s for it to stop, then KILL. Clears $pid.
stop_server() {
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "the server (pid $pid) did not stop on SIGTERM within 10 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  pid=""
}

# cleanup (the EXIT trap): stops the helpers and the server; removes the work directory
# after a run that succeeded or was interrupted, keeps it (and says where) after a failure
# or with LOAD_KEEP=1. Every command is `|| true`: under `set -e` a failing one would end
# the trap early; a second Ctrl-C or SIGTERM is ignored meanwhile (it takes at most 15 s),
# so that it cannot leave helpers or the server behind.
cleanup() {
  local rc=$?
  trap '' INT TERM
  stop_helpers || true
  stop_server || true
  if [ -n "${work:-}" ] && [ -d "$work" ]; then
    cd / || true
    if [ -n "${LOAD_KEEP:-}" ] || { [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; }; then
      echo "kept the work directory (serve.log, tool output): $work" >&2
    else
      rm -rf "$work" || true
    fi
  fi
  exit "$rc"
}

# traps: the EXIT trap runs cleanup; Ctrl-C and SIGTERM end the script (and so run it) at
# once when it waits for a helper.
traps() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# load_lock: one load script at a time on this machine (they pin CPUs and use fixed ports):
# fails at once when another holds /tmp/vportal-load.lock. Held until this script (and
# anything it started that is still running) has gone.
load_lock() {
  exec 9>/tmp/vportal-load.lock
  flock -n 9 || { echo "another load script is running (it holds /tmp/vportal-load.lock)" >&2; exit 2; }
}

# ports_free STEP FIRST LAST: fails (naming STEP) when a UDP or TCP socket on this machine
# holds a port from FIRST to LAST. The scripts' fixed ports are below 32768, outside
# Linux's default ephemeral range (32768-60999), so only another program's fixed port can.
ports_free() {
  local busy
  busy=$(ss -Hnatu | awk -v lo="$2" -v hi="$3" '{ p = $5; sub(/.*:/, "", p); if (p + 0 >= lo && p + 0 <= hi) print $5 }' | sort -u | head -n 5 | paste -sd' ' -)
  [ -z "$busy" ] || fail "$1" "ports $2-$3 are in use ($busy)"
}

# work_dir: takes the load lock, makes a fresh directory, sets the traps and moves into it.
work_dir() {
  load_lock
  work=$(mktemp -d)
  traps
  cd "$work" || exit 1
}

# fail STEP MESSAGE: says which step failed and why, with the end of the server's log (in
# the current directory) when there is one, and exits 1 (cleanup keeps the work directory).
fail() {
  echo "FAILED at $1: $2" >&2
  if [ -f serve.log ]; then
    echo "-- last lines of $PWD/serve.log:" >&2
    tail -n 20 serve.log >&2 || true
  fi
  exit 1
}

# server_alive STEP: fails (naming STEP) when the server ($pid) is gone.
server_alive() {
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    fail "$1" "the server (pid ${pid:-none}) is not running"
  fi
}

# sipp_count FILE LABEL: the total on the last line of SIPp's statistics screen in FILE
# whose first column is LABEL (e.g. "Successful call"); empty when there is none (SIPp did
# not start, or was stopped before its final screen).
sipp_count() {
  { grep -a "$2" "$1" || true; } | tail -n 1 | awk -F'|' '{ gsub(/ /, "", $3); print $3 }'
}

# sipp_missing STEP FILE: says that SIPp's output FILE holds no final statistics, naming the
# step, with the output's last lines.
sipp_missing() {
  echo "FAILED at $1: SIPp printed no final statistics (it did not start, or was stopped);" \
    "its output: $PWD/$2" >&2
  tail -n 15 "$2" >&2 || true
}

# provision FIRST COUNT: mailboxes FIRST… with the permanent passcode 48826, two at a time
# (a CSV import would make the passcodes temporary). Needs $vportal; run in the work dir.
provision() {
  # shellcheck disable=SC2016 # the inner shell expands it
  seq "$1" $(($1 + $2 - 1)) | xargs -P 2 -I{} sh -c 'printf 48826 | "$1" user add {} --passcode-stdin >/dev/null' _ "$vportal"
}

# listening WHAT: prints the address serve.log says `WHAT` (sip or admin) listens on,
# waiting up to 10 s; fails with the log when the server did not start.
listening() {
  local found=""
  for _ in $(seq 1 100); do
    found=$(sed -n "s/.*listening $1=\([0-9.]*:[0-9]*\).*/\1/p" serve.log | head -n 1)
    [ -n "$found" ] && { echo "$found"; return 0; }
    # Exited already (a bad option, a port in use): no use waiting out the 10 s.
    if [ -n "$pid" ] && ! ours "$pid"; then break; fi
    sleep 0.1
  done
  echo "vportal did not start" >&2; cat serve.log >&2; return 1
}

# build_release [EXAMPLE ...]: builds vportal, then the named examples (release profile),
# and sets $vportal to the binary and $examples to the examples' directory. Two cargo runs:
# in one, the examples' dev-dependencies would change the features vportal is built with,
# so that the binary measured would not be the one `cargo build --release` makes, and each
# script would rebuild it for the next. Needs $root. Honours CARGO_TARGET_DIR.
build_release() {
  local args=() example target="${CARGO_TARGET_DIR:-target}"
  for example in "$@"; do args+=(--example "$example"); done
  # shellcheck disable=SC2154 # $root: set by the script that sources this file
  (cd "$root" && cargo build --release --quiet --bin vportal)
  if [ ${#args[@]} -gt 0 ]; then
    (cd "$root" && cargo build --release --quiet "${args[@]}")
  fi
  case "$target" in /*) ;; *) target="$root/$target" ;; esac
  vportal="$target/release/vportal"
  # shellcheck disable=SC2034 # used by the scripts that source this file
  examples="$target/release/examples"
}

# media_config: writes vportal.toml in the current directory giving the media thread the
# SCHED_FIFO priority in $RTPRIO (unset or 0: normal priority; 1–99 needs root or
# CAP_SYS_NICE), for `serve --config vportal.toml …`.
media_config() {
  printf '[rtp]\nrealtime_priority = %s\n' "${RTPRIO:-0}" >vportal.toml
}
