#!/usr/bin/env bash
# The whole suite in two lanes at once, one per core (`make test`):
#   lane 1: the tests that start Ray (marker `ray`), one at a time: a `ray start` cluster is joined
#           by any later ray.init() on this machine, and `ray stop` ends every Ray here;
#   lane 2: everything else, beside them, with one torch thread.
# Each lane's report is printed when both have ended; the exit status is 0 only if both passed
# (pytest's 5, no test collected, is a failure too).
set -u
PY=${1:-.venv/bin/python}
out=$(mktemp -d /tmp/rootfree-tests.XXXXXX)
"$PY" -m pytest -q -x -m ray --durations=10 --basetemp="$out/ray" -p no:cacheprovider \
    > "$out/ray.log" 2>&1 &
ray_lane=$!
OMP_NUM_THREADS=1 "$PY" -m pytest -q -x -m "not ray" --durations=10 --basetemp="$out/rest" \
    > "$out/rest.log" 2>&1 &
rest_lane=$!
wait $ray_lane; ray_rc=$?
wait $rest_lane; rest_rc=$?
echo "==================== lane 1: the tests that start Ray, one at a time (exit $ray_rc)"
cat "$out/ray.log"
echo "==================== lane 2: every other test (exit $rest_rc)"
cat "$out/rest.log"
[ "$ray_rc" -eq 0 ] && [ "$rest_rc" -eq 0 ] && rm -rf "$out"
[ "$ray_rc" -eq 0 ] && [ "$rest_rc" -eq 0 ]
