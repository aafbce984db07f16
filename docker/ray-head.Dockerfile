# A Ray head node: GCS, scheduler and the dashboard (port 8265) with Prometheus metrics export
# (port 8080). The project is installed because Tune pickles the trainable by reference.
# Build from the repository root: docker build -f docker/ray-head.Dockerfile -t rootfree/ray-head .
FROM rayproject/ray:2.60.0-py311-cpu

# The base image runs as `ray` (uid 1000, gid 100): these directories are that user's, and a
# named volume mounted on /home/ray/runs (Tune checkpoints) starts with that ownership.
RUN mkdir -p /home/ray/app /home/ray/runs
WORKDIR /home/ray/app
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 optimizers ./optimizers
COPY --chown=1000:100 search_spaces ./search_spaces
COPY --chown=1000:100 workers ./workers
COPY --chown=1000:100 service ./service
RUN pip install --no-cache-dir .

ENV RAY_USAGE_STATS_ENABLED=0
USER 1000
EXPOSE 6379 8265 8080 10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8265/api/gcs_healthz', timeout=4)"]
ENTRYPOINT ["ray", "start", "--head", "--block", "--port=6379", "--dashboard-host=0.0.0.0", \
            "--dashboard-port=8265", "--metrics-export-port=8080", "--ray-client-server-port=10001"]
# No trials on the head by default; `command: []` in compose lets it train too.
CMD ["--num-cpus=0", "--num-gpus=0"]
