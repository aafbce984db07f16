# The controller: the FastAPI API and the study runner (`rootfree serve`). It is a Ray driver, so
# Ray and Python match the cluster's images; CPU torch only (trials run on the workers).
# Build from the repository root: docker build -f docker/controller.Dockerfile -t rootfree/controller .
FROM rayproject/ray:2.60.0-py311-cpu

# The base image runs as `ray` (uid 1000, gid 100): these directories are that user's, and a
# named volume mounted on /home/ray/runs (Tune checkpoints) starts with that ownership.
RUN mkdir -p /home/ray/app /home/ray/runs
WORKDIR /home/ray/app
# torch first: the heaviest layer changes least often.
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 optimizers ./optimizers
COPY --chown=1000:100 search_spaces ./search_spaces
COPY --chown=1000:100 workers ./workers
COPY --chown=1000:100 service ./service
RUN pip install --no-cache-dir .

# Settings come from ROOTFREE_* variables at run time (see .env.example); none are baked in.
ENV ROOTFREE_HOST=0.0.0.0 \
    ROOTFREE_PORT=8000 \
    ROOTFREE_STORAGE_PATH=/home/ray/runs \
    RAY_USAGE_STATS_ENABLED=0
USER 1000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# `rootfree serve` runs the Alembic migrations before it binds its port; `rootfree migrate`
# alone suits an init container.
ENTRYPOINT ["rootfree"]
CMD ["serve"]
