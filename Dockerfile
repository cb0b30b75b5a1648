# One image for the relay and the router: `outbox relay run` / `outbox router run`.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY contracts contracts
COPY relay relay
COPY router router
COPY stack stack
COPY outbox outbox
COPY sql sql
COPY connect-config connect-config
# The versions the tests ran (scripts/lock.py), not whatever resolves today.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c requirements.lock .

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin outbox
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /app
ENV PYTHONUNBUFFERED=1 HEALTHCHECK_URL=http://127.0.0.1:8765/healthz
EXPOSE 8765 9108
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=2)"]
ENTRYPOINT []
CMD ["outbox", "--help"]
