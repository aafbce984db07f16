# The controller: FastAPI + study runner (`rootfree serve`), talking to a Ray cluster and PostgreSQL.
FROM rayproject/ray:2.60.0-py311-cpu
USER root
WORKDIR /app
COPY pyproject.toml README.md ./
COPY optimizers ./optimizers
COPY search_spaces ./search_spaces
COPY workers ./workers
COPY service ./service
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir .
RUN useradd --create-home --uid 10001 rootfree && chown -R rootfree /app
USER rootfree
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["rootfree", "serve", "--host", "0.0.0.0", "--port", "8000"]
