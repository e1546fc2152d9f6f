#!/usr/bin/env bash
# A two-node Ray cluster on one machine (a head and a second node joining it, one CPU each) runs the
# quick MNIST study (table cells declare 1 CPU: no node has the default 2); the serial quick study
# runs from its own empty cache; every table must match.
# Writes results/benchmarks/ray_two_nodes.txt.    Usage: bash benchmarks/ray_two_nodes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=results/benchmarks/ray_two_nodes.txt
WORK=$(mktemp -d)
export RAY_AUTH_MODE=token  # the driver and both nodes share the token in ~/.ray/auth_token
export RAY_idle_worker_killing_time_threshold_ms=600000  # keep workers that imported TensorFlow
trap '$BIN/ray stop --force >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
$BIN/ray get-auth-token --generate >/dev/null 2>&1 || true
$BIN/ray start --head --port 6390 --num-cpus 1 --include-dashboard false --disable-usage-stats >/dev/null
$BIN/ray start --address 127.0.0.1:6390 --num-cpus 1 --disable-usage-stats >/dev/null
nodes=$($BIN/python -c "import ray; ray.init(address='127.0.0.1:6390', log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))" 2>/dev/null)
run() { /usr/bin/time -f %e -o "$WORK/$1.time" $BIN/python -m prunelib run --quick --dataset mnist --no-progress \
          --results "$WORK/$1" --cache "$WORK/$1-cache" "${@:2}" >/dev/null 2>"$WORK/$1.log"; }
run ray --ray 127.0.0.1:6390 --ray-table-cpus 1
run serial
{
  echo "nodes alive: $nodes"
  echo "serial quick study: $(cat "$WORK/serial.time") s; on the two-node cluster: $(cat "$WORK/ray.time") s"
  for t in sweep sensitivity recovery; do
    if $BIN/python -c "import pandas as pd, sys; a, b = (pd.read_csv(f'$WORK/{r}/mnist/$t.csv').drop(columns=['seconds'], errors='ignore') for r in ('serial', 'ray')); sys.exit(0 if a.equals(b) else 1)"; then
      echo "$t.csv: identical"; else echo "$t.csv: DIFFERENT"; fi
  done
} | tee "$OUT"
