#!/usr/bin/env bash
# How long an import's one transaction holds the database's write lock.
#
#   tests/load/import-write.sh [ROWS ...]          (default: 100000 500000)
#
# An import writes all its rows in one transaction (all or nothing), and a caller's login
# waits for that write lock at most the store's 10 s busy timeout: this is what sets the
# 100,000-row limit on imports. For each ROWS it makes a fresh database with the release
# build (`vportal init`, the real schema and pragmas) and times, with the sqlite3 shell,
# the statements an import runs per row (the mailbox, its user.created audit row, its
# temporary passcode, history row and passcode.temporary_set audit row), in one
# transaction. The shell parses each statement anew where vportal prepares them once: an
# upper bound. No hashing (that happens before the transaction). Needs sqlite3 and awk.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/load/lib.sh
. "$here/lib.sh"
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100000 500000)
# shellcheck disable=SC2119 # no examples
build_release
work_dir
# shellcheck disable=SC2016 # a PHC string, not an expansion
hash='$argon2id$v=19$m=7168,t=5,p=1$AAAAAAAAAAAAAAAAAAAAAA$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB'
printf '%8s %10s %10s\n' rows seconds db_MB
for rows in "${counts[@]}"; do
  rm -f vportal.db vportal.db-wal vportal.db-shm vportal.pepper
  "$vportal" init >init.out 2>init.err
  awk -v n="$rows" -v h="$hash" 'BEGIN {
    print "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; BEGIN IMMEDIATE;"
    for (i = 0; i < n; i++) {
      e = 3000000 + i
      printf "INSERT INTO users (extension, name, email, created_at) VALUES (%s, %s, NULL, 1700000000) ON CONFLICT (extension) DO NOTHING;\n", "'\''" e "'\''", "'\''Name " i "'\''"
      printf "INSERT INTO audit (at, event, extension, actor, outcome) VALUES (1700000000, %s, %s, %s, %s);\n", "'\''user.created'\''", "'\''" e "'\''", "'\''admin:load'\''", "'\''ok'\''"
      printf "UPDATE users SET passcode_hash = %s, temporary = 1, temporary_expires_at = 1700259200 WHERE extension = %s;\n", "'\''" h "'\''", "'\''" e "'\''"
      printf "INSERT INTO passcode_history (extension, hash, set_at) VALUES (%s, %s, 1700000000);\n", "'\''" e "'\''", "'\''" h "'\''"
      printf "INSERT INTO audit (at, event, extension, actor, outcome) VALUES (1700000000, %s, %s, %s, %s);\n", "'\''passcode.temporary_set'\''", "'\''" e "'\''", "'\''admin:load'\''", "'\''ok'\''"
    }
    print "COMMIT;"
  }' >import.sql
  start=$(date +%s.%N)
  sqlite3 vportal.db <import.sql >/dev/null
  end=$(date +%s.%N)
  size=$(du -m vportal.db | cut -f1)
  printf '%8s %10.2f %10s\n' "$rows" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$size"
done
