#!/usr/bin/env bash
# The whole test suite. Installs the external tools the tests drive when they are missing
# (SIPp, tshark, baresip and script: Debian/Ubuntu packages sip-tester, tshark, baresip-core
# and bsdutils), then runs `cargo test`.
# The SIPp DTMF and capture tests need root (or CAP_NET_RAW). Extra arguments go to
# cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)
# `script` (util-linux, essential on Debian) gives the CLI's passcode prompt a terminal.
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test tools: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "please install: ${missing[*]}" >&2
    exit 1
  fi
fi

# Not root: the SIPp DTMF and capture tests need CAP_NET_RAW on sipp (pcap replay through a
# raw socket) and on tshark's dumpcap. Without it they would fail after the whole build;
# say so now instead.
if [ "$(id -u)" != 0 ]; then
  has_raw() { command -v getcap >/dev/null 2>&1 && getcap "$1" 2>/dev/null | grep -q cap_net_raw; }
  lacking=()
  has_raw "$(command -v sipp)" || lacking+=("$(command -v sipp)")
  dumpcap=$(command -v dumpcap || echo /usr/bin/dumpcap)
  # Debian's wireshark-common may instead make dumpcap usable by the wireshark group.
  if ! has_raw "$dumpcap" || [ ! -x "$dumpcap" ]; then lacking+=("$dumpcap"); fi
  if [ ${#lacking[@]} -gt 0 ]; then
    echo "not root, and without CAP_NET_RAW: ${lacking[*]}" >&2
    echo "the SIPp DTMF and capture tests need it. Run this as root, or grant it:" >&2
    for tool in "${lacking[@]}"; do echo "  sudo setcap cap_net_raw+ep $tool" >&2; done
    echo "(or run \`cargo test --locked\` knowing that those tests will fail)" >&2
    exit 2
  fi
fi

exec cargo test --locked "$@"
