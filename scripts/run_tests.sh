#!/usr/bin/env bash
# The whole suite as `make test` runs it. Argument 1: the Python of the virtual environment.
#  1. At the same time:
#     - the tests that start Ray (marker `ray`, tests/conftest.py) on two pytest-xdist workers, a
#       test module per worker (`--dist loadscope`: some share a module-scoped Ray). Each test
#       process starts a local Ray of its own, on ports Ray picks; these tests wait on paced trials,
#       leases and outages, and Ray's start-up is one core's work, so one at a time left the
#       machine ~70% idle;
#     - everything that starts no Ray, on two workers under `nice`, which soak up what is idle
#       without slowing the timed Ray tests. Its output is kept in a file and printed after.
#  2. Alone: the tests that start a `ray start` cluster (marker `ray_start`), which any
#     `ray.init()` on this machine would join and whose `ray stop` ends every Ray here.
# Exits non-zero when any run fails (pytest's 5, no tests collected, included).
set -u
PY=${1:-.venv/bin/python}
log=$(mktemp -t rootfree-tests-no-ray.XXXXXX)
trap 'rm -f "$log"' EXIT
# -p no:cacheprovider: runs at the same time would all write .pytest_cache at the end.
pytest=("$PY" -m pytest -q -x -p no:cacheprovider)

nice -n 15 "${pytest[@]}" -n 2 -m "not ray" --durations=10 >"$log" 2>&1 &
others=$!

echo "== the tests that start Ray, two at a time (the ones that start none run beside them) =="
"${pytest[@]}" -n 2 --dist loadscope -m "ray and not ray_start" --durations=15
ray_rc=$?

wait "$others"
others_rc=$?
echo
echo "== the tests that start no Ray (-n 2 -m 'not ray', under nice) =="
cat "$log"

echo
echo "== the tests that start a \`ray start\` cluster, alone =="
"${pytest[@]}" -m ray_start --durations=3
start_rc=$?

echo
echo "exit codes: tests that start Ray ${ray_rc}; the others ${others_rc}; \`ray start\` tests ${start_rc}"
[ "$ray_rc" -eq 0 ] && [ "$others_rc" -eq 0 ] && [ "$start_rc" -eq 0 ]
