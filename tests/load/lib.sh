# Shared by the load scripts (sourced, not run): provisioning and waiting for the server.

# work_dir: makes a fresh directory and moves into it. When the script exits, the server
# started there (its pid in $pid) is stopped and the directory removed.
work_dir() {
  work=$(mktemp -d)
  pid=""
  # `|| true`: under `set -e` a failing kill (the server already gone) would end the trap
  # before the directory is removed.
  trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
  cd "$work"
}

# provision FIRST COUNT: mailboxes FIRST… with the permanent passcode 48826, two at a time
# (a CSV import would make the passcodes temporary). Needs $vportal; run in the work dir.
provision() {
  seq "$1" $(($1 + $2 - 1)) | xargs -P 2 -I{} sh -c 'printf 48826 | "$1" user add {} --passcode-stdin >/dev/null' _ "$vportal"
}

# listening WHAT: prints the address serve.log says `WHAT` (sip or admin) listens on,
# waiting up to 10 s; fails with the log when the server did not start.
listening() {
  local found=""
  for _ in $(seq 1 100); do
    found=$(sed -n "s/.*listening $1=\([0-9.]*:[0-9]*\).*/\1/p" serve.log | head -n 1)
    [ -n "$found" ] && { echo "$found"; return 0; }
    sleep 0.1
  done
  echo "vportal did not start" >&2; cat serve.log >&2; return 1
}

# build_release [EXAMPLE ...]: builds vportal and the named examples (release profile) in
# one cargo run and sets $vportal to the binary. Needs $root.
build_release() {
  local args=(--bin vportal) example
  for example in "$@"; do args+=(--example "$example"); done
  (cd "$root" && cargo build --release --quiet "${args[@]}")
  vportal="$root/target/release/vportal"
}

# media_config: writes vportal.toml in the current directory giving the media thread the
# SCHED_FIFO priority in $RTPRIO (unset or 0: normal priority; 1–99 needs root or
# CAP_SYS_NICE) and prints the flag that loads it, for `serve $(media_config) …`.
media_config() {
  printf '[rtp]\nrealtime_priority = %s\n' "${RTPRIO:-0}" >vportal.toml
  echo "--config vportal.toml"
}
