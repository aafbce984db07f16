# A Ray GPU worker node. torch from PyPI is the CUDA build with its own CUDA runtime (only the
# host's NVIDIA driver is needed), so it does not depend on the CUDA version of the Ray image.
# Build from the repository root: docker build -f docker/ray-worker.Dockerfile -t rootfree/ray-worker .
FROM rayproject/ray:2.60.0-py311-gpu

# The base image runs as `ray` (uid 1000, gid 100): these directories are that user's, and a
# named volume mounted on /home/ray/runs (Tune checkpoints) starts with that ownership.
RUN mkdir -p /home/ray/app /home/ray/runs
WORKDIR /home/ray/app
RUN pip install --no-cache-dir "torch==2.13.0"
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 optimizers ./optimizers
COPY --chown=1000:100 search_spaces ./search_spaces
COPY --chown=1000:100 workers ./workers
COPY --chown=1000:100 service ./service
RUN pip install --no-cache-dir .

ENV RAY_USAGE_STATS_ENABLED=0
USER 1000
EXPOSE 52365
# The node's own raylet, through its dashboard agent (the probe KubeRay uses).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:52365/api/local_raylet_healthz', timeout=4)"]
ENTRYPOINT ["ray", "start", "--block", "--dashboard-agent-listen-port=52365"]
# The head's address; compose passes it, as would `docker run ... rootfree/ray-worker --address=HEAD:6379`.
CMD ["--address=ray-head:6379"]
