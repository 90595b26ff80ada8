# syntax=docker/dockerfile:1
# Kvarus Analytics API. Build: docker build -t kvarus .  Run: docker run --init -p 8000:8000 \
#   -e KVARUS_PSEUDONYM_KEY=<secret of 32+ characters> -v kvarus-data:/data kvarus
# (--init: an init as PID 1 reaps the short-lived re-keying process of a worker that was killed)

# --- build stage: resolve and install into a virtual environment --------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/kvarus
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY etl ./etl
COPY validation ./validation
COPY indicators ./indicators
COPY service ./service
# The production image serves the API; the Spark extra is for batch jobs and stays out of it.
RUN /opt/kvarus/bin/pip install --no-compile .

# --- runtime stage: the environment only, a non-root user -------------------------------------
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/kvarus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KVARUS_DATA_DIR=/data \
    GX_ANALYTICS_ENABLED=False
RUN groupadd --system --gid 10001 kvarus \
    && useradd --system --uid 10001 --gid kvarus --home-dir /data --shell /usr/sbin/nologin kvarus \
    && mkdir -p /data && chown kvarus:kvarus /data
COPY --from=build /opt/kvarus /opt/kvarus
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# A module, not `python -c`: see ARCHITECTURE.md (pyspark's import-time check exits 0 under -c).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "service.healthcheck", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["kvarus"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
