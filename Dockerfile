# Strategy Worker image: the same console script (`strategy-worker`) that the tests run.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
COPY examples ./examples
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --system --create-home worker
USER worker

# 9091: Prometheus metrics; 8080: /health and /ready.
EXPOSE 9091 8080
ENTRYPOINT ["strategy-worker"]
CMD ["run"]
