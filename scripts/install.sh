#!/usr/bin/env bash
# Installs everything the project needs into a virtual environment (argument 1, default .venv):
# the CPU build of torch when there is no GPU (so pip never pulls a multi-GB CUDA build),
# the project with its dev extras, and the offline datasets from Debian's packages.
set -euo pipefail
VENV=${1:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip "setuptools>=68" wheel
# pip byte-compiles what it installs on one core; compileall does the same on every core afterwards
# (98 s vs 156 s for a fresh install on 2 cores). The .pyc files matter: where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) nothing else writes them, and `import torch`
# without them takes 4.4 s instead of 2.4 s in every process a test starts.
if ! command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-compile "torch==2.13.0"
fi
# The project and the example plugins (a workload and an optimizer, through entry points: the tests
# use them), built with the venv's own setuptools rather than in a fresh isolated build environment.
"$PY" -m pip install -q --no-compile --no-build-isolation -e ".[dev]" -e examples/plugins/rootfree-examples
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# A few files are not Python 3.11 on purpose (torch's py312_intrinsics.py): pip skips those too.
"$PY" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
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
