#!/usr/bin/env bash
# Benchmark: `restorectl validate` over 10,000 generated job files (all five kinds, scheduled
# and one-shot, in 100 subdirectories) with the release binary. Prints the wall time of each
# run and the best/median; the target is ≤ 2 s on a 2-core machine. Not a test: it only prints.
#
# Usage: bench/validate.sh [FILES] [RUNS]   (defaults: 10000 files, 5 runs)
set -euo pipefail

files=${1:-10000}
runs=${2:-5}
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=$PWD/target/release/restorectl

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/secrets" "$tmp/exports"
cat > "$tmp/restorectl.yaml" <<'YAML'
exportRoot: exports
secretsDir: secrets
timezone: Europe/Berlin
servers:
  primary:
    url: https://vb365.example.test:4443
    username: CONTOSO\svc-restore
    password: { secret: vb365-password }
YAML

# One awk process writes every file (a shell loop would dominate the set-up time).
awk -v n="$files" -v dir="$tmp" 'BEGIN {
  for (i = 0; i < n; i++) {
    sub_dir = sprintf("%s/team-%02d", dir, i % 100)
    if (i < 100) system("mkdir -p " sub_dir)
    f = sprintf("%s/job-%05d.yaml", sub_dir, i)
    name = sprintf("job-%05d", i)
    k = i % 5
    print "# generated job " i > f
    print "apiVersion: restorectl/v1" > f
    if (k == 0) {
      print "kind: ExportPst\nmetadata:\n  name: " name "\n  labels: { team: legal }\nspec:\n  organization: contoso.onmicrosoft.com\n  mailboxes:\n    - { match: \"*@legal.contoso.com\" }\n    - user" i "@contoso.com\n  exclude: [ { match: \"svc-*@contoso.com\" } ]\n  schedule:\n    cron: \"0 2 * * SUN\"\n    timezone: Europe/Berlin\n    startingDeadline: 6h\n  retry: { maxAttempts: 5, initialBackoff: 30s, maxBackoff: 30m }\n  export:\n    keyword: \"project falcon\"\n    pstSizeLimit: 10GiB\n    path: \"{job}/{date}/{mailbox}.pst\"\n    retention: { keepLast: 12, keepFor: 400d }" > f
    } else if (k == 1) {
      print "kind: Restore\nmetadata:\n  name: " name "\nspec:\n  organization: contoso.onmicrosoft.com\n  pointInTime: 24h ago\n  mailboxes: [ user" i "@contoso.com ]\n  restore:\n    credentials:\n      user: { userName: svc-backup@contoso.com, password: { secret: m365-pass } }" > f
    } else if (k == 2) {
      print "kind: RestoreTo\nmetadata:\n  name: " name "\nspec:\n  organization: contoso.onmicrosoft.com\n  mailboxes: [ user" i "@contoso.com ]\n  restoreTo:\n    mailbox: legal-review@contoso.com\n    folder: \"Restored/{mailbox}\"\n    options: { changedItems: true, markRestoredAsUnread: true }\n    credentials:\n      application:\n        applicationId: 3f8e5a2c-41d7-4c2b-9e1f-0a6b7c8d9e10\n        certificate: { secret: app-cert }" > f
    } else if (k == 3) {
      print "kind: BulkRestore\nmetadata:\n  name: " name "\nspec:\n  organization: contoso.onmicrosoft.com\n  mailboxes: [ { all: true } ]\n  archives: exclude\n  bulkRestore:\n    recentItemRestorePeriod: 30\n    credentials:\n      office365: { userName: svc-backup@contoso.com, password: { env: M365_PASS } }" > f
    } else {
      print "kind: Search\nmetadata:\n  name: " name "\nspec:\n  organization: contoso.onmicrosoft.com\n  schedule: { cron: \"0 6 1 * *\" }\n  search:\n    query: \"subject:\\\"board minutes\\\"\"\n    report: { path: \"{job}/{date}/search.jsonl\", format: jsonl }" > f
    }
    close(f)
  }
}'

echo "validating $files job files in $tmp ($(nproc) cores), $runs runs"
"$bin" validate "$tmp" > "$tmp.out" || { tail -5 "$tmp.out"; echo "generated files do not validate" >&2; exit 1; }
tail -1 "$tmp.out"
rm -f "$tmp.out"

times=()
for r in $(seq 1 "$runs"); do
  start=$(date +%s%N)
  "$bin" validate "$tmp" > /dev/null
  end=$(date +%s%N)
  ms=$(( (end - start) / 1000000 ))
  times+=("$ms")
  printf 'run %d: %d.%03d s\n' "$r" $((ms / 1000)) $((ms % 1000))
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
best=${sorted[0]}
median=${sorted[$(( ${#sorted[@]} / 2 ))]}
printf 'best: %d.%03d s, median: %d.%03d s for %d files (target: <= 2 s)\n' \
  $((best / 1000)) $((best % 1000)) $((median / 1000)) $((median % 1000)) "$files"
