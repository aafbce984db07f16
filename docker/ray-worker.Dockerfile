# A Ray GPU worker node: the CUDA build of torch matching the Ray image, the project installed.
FROM rayproject/ray:2.60.0-py311-cu124
WORKDIR /home/ray/app
COPY --chown=ray pyproject.toml README.md ./
COPY --chown=ray optimizers ./optimizers
COPY --chown=ray search_spaces ./search_spaces
COPY --chown=ray workers ./workers
COPY --chown=ray service ./service
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu124 \
    && pip install --no-cache-dir .
USER ray
HEALTHCHECK --interval=15s --timeout=5s --retries=5 CMD ray status --address "${RAY_ADDRESS}" >/dev/null
ENTRYPOINT ["sh", "-c", "ray start --address=${RAY_ADDRESS} --block"]
