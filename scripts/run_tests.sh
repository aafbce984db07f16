#!/usr/bin/env bash
# The whole suite as `make test` runs it: two pytest runs at the same time.
#  - The tests that start Ray (marker `ray`, tests/conftest.py), one at a time in the foreground:
#    two Rays on one machine must never overlap, and these tests wait on paced trials, leases and
#    outages far more than they compute (the CPU sat ~47% idle through them).
#  - Everything else (no Ray), on three pytest-xdist workers under `nice`, which soak up that idle
#    CPU without taking it from the timed Ray tests. Its output is kept in a file and printed after.
# Exits non-zero when either run fails. Argument 1: the Python of the virtual environment.
set -u
PY=${1:-.venv/bin/python}
log=$(mktemp -t rootfree-tests-no-ray.XXXXXX)
trap 'rm -f "$log"' EXIT

# -p no:cacheprovider: the two runs would otherwise both write .pytest_cache at the end.
nice -n 15 "$PY" -m pytest -q -x -n 3 -m "not ray" --durations=10 -p no:cacheprovider >"$log" 2>&1 &
others=$!

echo "== the tests that start Ray (one at a time); the others run beside them on 3 workers (nice 15) =="
"$PY" -m pytest -q -x -m ray --durations=15
ray_rc=$?

wait "$others"
others_rc=$?
echo
echo "== the tests that start no Ray (pytest -n 3 -m 'not ray') =="
cat "$log"

echo
echo "tests that start Ray: exit ${ray_rc}; the others: exit ${others_rc}"
# pytest's 5 (no tests collected) is a failure here too: each run must find its tests.
[ "$ray_rc" -eq 0 ] && [ "$others_rc" -eq 0 ]
