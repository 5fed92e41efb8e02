# The buttress server image: the package with its demo extra, the demo as the default service.
# Build: docker build -t buttress . ; run: docker run -p 8000:8000 buttress
# Serve your own service: COPY it in (FROM buttress) and pass its target, e.g.
#   docker run buttress my_service.py:svc
# Settings come from BUTTRESS_* variables or a buttress.toml passed with --config.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The demo's models are trained at build time into a cache inside the image (not a home
# directory), so the container's file system can be read-only at run time.
ENV XDG_CACHE_HOME=/app/cache

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[demo]"
RUN python -m buttress.demo.train

# A user of its own; var/ (events, Prometheus files) is the only place it writes.
RUN useradd --system --uid 10001 --no-create-home --home-dir /app buttress \
    && mkdir -p /app/var \
    && chown buttress /app/var
USER 10001

# Listen on every interface inside the container; drain_timeout (30 s by default) is what an
# orchestrator's grace period must cover (see deploy/kubernetes).
ENV BUTTRESS_HOST=0.0.0.0 \
    BUTTRESS_PORT=8000
EXPOSE 8000

# Liveness only: /healthz never depends on Redis or the model.
HEALTHCHECK --interval=10s --timeout=2s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["buttress", "serve"]
CMD ["buttress.demo.service:svc"]
