#!/usr/bin/env bash
# Regenerate the pictures in docs/ (`make docs`):
# - each shipped topology's graph (docs/topology-<name>.svg), from its file: no root needed;
# - as root, from a lab of its own (a unique name, torn down at the end): the default lab's
#   live graph before and during `fail ams dns-hang`, `watch`'s view of it
#   (docs/watch-ams-dns-hang.svg), its catchment matrix, and the failover timeline of the
#   README (docs/failover-dns-hang.png, both families).
# docs/failover-matrix-dns-hang.png is drawn by `make bench` (bench/failover_bench.py).
# DOCS_MEASURED=0 skips the lab.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lab_cli="${ANYCAST_LAB_VENV:-$here/.venv}/bin/anycast-lab"
docs="$here/docs"
say() { printf 'docs: %s\n' "$*"; }

[ -x "$lab_cli" ] || { echo "docs: run 'sudo make install' first" >&2; exit 3; }
for topology in "$here"/topologies/*.yaml; do
  name="$(basename "$topology" .yaml)"
  "$lab_cli" graph "$topology" -o "$docs/topology-$name.svg"
done

if [ "${DOCS_MEASURED:-1}" = 0 ]; then
  say "DOCS_MEASURED=0: the live pictures and the timeline are left as they are"; exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  say "not root: the live pictures and the timeline need a lab (sudo make docs)"; exit 0
fi
lab="docs-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
trap '"$lab_cli" down --lab "$lab" >/dev/null || true' EXIT
say "building lab $lab for the live pictures"
"$lab_cli" up "$here/topologies/default.yaml" --name "$lab" >/dev/null
"$lab_cli" graph --lab "$lab" -o "$docs/live-default.svg"
"$lab_cli" catchment --lab "$lab" --plot "$docs/catchment-default.png" >/dev/null 2>&1
# watch's last frame, taken a few seconds after the fault: c-eu's strip shows the move.
"$lab_cli" watch --lab "$lab" --duration 12 --json \
  --snapshot "$docs/watch-ams-dns-hang.svg" >/dev/null &
watch_pid=$!
sleep 5  # watch is up and has seconds of history
"$lab_cli" fail ams dns-hang --lab "$lab" >/dev/null
for _ in $(seq 100); do  # until ams is withdrawn and c-eu answered by nyc (20 s at most)
  if "$lab_cli" status --lab "$lab" --json 2>/dev/null \
      | jq -e '.sites.ams.announced == false and .clients["c-eu"].site == "nyc"' >/dev/null; then
    break
  fi
  sleep 0.2
done
"$lab_cli" graph --lab "$lab" -o "$docs/live-default-ams-dns-hang.svg"
wait "$watch_pid"
"$lab_cli" heal ams --lab "$lab" >/dev/null
"$lab_cli" measure failover --lab "$lab" --site ams --fault dns-hang --trials 3 \
  --family both --rate 200 --plot "$docs/failover-dns-hang.png"
say "done"
