# hera-guard's commands (capture, consumers, replay, guard) in one image; docker-compose.yml
# runs one service per command. Configured only through HERA_* environment variables.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY capture ./capture
COPY consumers ./consumers
COPY replay ./replay
COPY guard ./guard
COPY devstack ./devstack
COPY bench ./bench
COPY sql ./sql
# A regular install: the sql/ scripts go to <prefix>/share/hera-guard/sql, where
# `guard install` finds them. The `fast` extra is the confluent-kafka client.
RUN pip install '.[fast]' \
    && useradd --system --uid 10001 --home-dir /app hera \
    && mkdir -p /archive /state && chown hera /archive /state
USER hera
