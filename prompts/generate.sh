#!/usr/bin/env bash
# Renders a prompt set with espeak-ng and sox.
#
# Usage: prompts/generate.sh [LANG [VOICE [SPEED]]]
#   LANG   the folder under prompts/ holding prompts.toml     (default: en)
#   VOICE  an espeak-ng voice, see `espeak-ng --voices`        (default: en-us)
#   SPEED  words per minute                                    (default: 150)
# Example: prompts/generate.sh en en-us 150
#
# The manifest prompts/LANG/prompts.toml is the single source of truth: this script reads
# each prompt's id, file and text from it and writes prompts/LANG/<file> as 8 kHz mono
# 16-bit PCM WAV: leading and trailing silence trimmed, a 10 ms fade-in and 30 ms fade-out
# so the prompt starts and stops without a click, peak-normalised to -3 dBFS. A prompt with
# `silence_ms = N` is rendered as N ms of digital silence instead. Levels are set here, not
# at load time, so what is committed is what callers hear.
#
# The manifest is read line by line (see its header): `[id]` lines and `key = "value"` lines.
# Output is repeatable: sox runs with -R (fixed seeds) and -D (no dither), and espeak-ng has
# no random element, so rerunning on the same machine rewrites the same bytes. Another
# espeak-ng or sox version may render slightly different audio.
#
# Needs: espeak-ng, sox.
set -euo pipefail

lang="${1:-en}"
voice="${2:-en-us}"
speed="${3:-150}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$here/$lang"
manifest="$dir/prompts.toml"

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "generate.sh: $tool is not installed" >&2; exit 1; }
done
[[ -f "$manifest" ]] || { echo "generate.sh: no manifest at $manifest" >&2; exit 1; }
[[ "$speed" =~ ^[0-9]+$ ]] || { echo "generate.sh: SPEED must be words per minute" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The manifest as one line per prompt: id, file, text, silence_ms, separated by the ASCII unit
# separator (not a tab: `read` would merge the empty text of a silence prompt into its neighbour).
# Lines it does not understand stop the script rather than being skipped.
awk -v manifest="$manifest" '
    function flush() {
        if (id != "") {
            if (file == "") { printf "%s:%d: [%s] has no file\n", manifest, start, id > "/dev/stderr"; bad = 1 }
            printf "%s\037%s\037%s\037%s\n", id, file, text, ms
        }
        id = ""; file = ""; text = ""; ms = ""
    }
    /^[[:space:]]*(#.*)?$/ { next }
    /^\[[A-Za-z0-9_]+\][[:space:]]*$/ {
        flush(); id = $0; gsub(/[][[:space:]]/, "", id); start = NR; next
    }
    /^(file|text)[[:space:]]*=[[:space:]]*"[^"\\]*"[[:space:]]*$/ {
        key = $0; sub(/[[:space:]]*=.*/, "", key)
        value = $0; sub(/^[^"]*"/, "", value); sub(/"[[:space:]]*$/, "", value)
        if (id == "") { printf "%s:%d: %s outside a [prompt] table\n", manifest, NR, key > "/dev/stderr"; bad = 1 }
        if (key == "file") file = value; else text = value
        next
    }
    /^silence_ms[[:space:]]*=[[:space:]]*[0-9]+[[:space:]]*$/ {
        ms = $0; sub(/^[^=]*=[[:space:]]*/, "", ms); sub(/[[:space:]]*$/, "", ms); next
    }
    { printf "%s:%d: cannot read this line: %s\n", manifest, NR, $0 > "/dev/stderr"; bad = 1 }
    END { flush(); exit bad }
' "$manifest" >"$tmp/prompts.list"

count=0
while IFS=$'\037' read -r id file text ms; do
    out="$dir/$file"
    if [[ -n "$ms" ]]; then
        seconds="$(awk -v ms="$ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
        sox -R -D -n -r 8000 -c 1 -b 16 -e signed-integer "$out" trim 0 "$seconds"
    else
        [[ -n "$text" ]] || { echo "generate.sh: [$id] has no text to speak" >&2; exit 1; }
        printf '%s' "$text" | espeak-ng -v "$voice" -s "$speed" --stdin -w "$tmp/raw.wav"
        # silence / reverse silence / reverse: trim both ends (sox has no trailing-only trim);
        # the fades sit next to each trim so they shape the speech, not removed silence.
        sox -R -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out" \
            silence 1 0.02 0.2% fade t 0.01 \
            reverse silence 1 0.02 0.2% fade t 0.03 reverse \
            rate -v 8000 gain -n -3
    fi
    count=$((count + 1))
done <"$tmp/prompts.list"

echo "generate.sh: wrote $count prompts to $dir (voice $voice, $speed wpm)"
