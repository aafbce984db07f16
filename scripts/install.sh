#!/usr/bin/env bash
# Installs everything the project needs into a virtual environment (argument 1, default .venv):
# the CPU build of torch when there is no GPU (so pip never pulls a multi-GB CUDA build),
# the project with its dev extras, and the offline datasets from Debian's packages.
set -euo pipefail
VENV=${1:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[dev]"
# The example plugins (a workload and an optimizer, through entry points): the tests use them.
"$PY" -m pip install -q -e examples/plugins/rootfree-examples
# Fashion-MNIST (IDX files), the compose validator and Chromium come from Debian's packages.
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# Chromium renders the study report in a real browser in the tests (headless).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
    else
        echo "please install with apt-get: ${need[*]}" >&2
    fi
fi
