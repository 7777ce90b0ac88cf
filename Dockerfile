# One image for all four services; docker-compose.yml picks the service with `strongroom serve <name>`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml ./
COPY shared ./shared
COPY services ./services
COPY agent ./agent
COPY strongroom ./strongroom
COPY launch ./launch
RUN pip install . \
    && rm -rf /app/build /app/*.egg-info \
    && useradd --system --uid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin strongroom

# Fixed uid so the keysvc secret files on the host can be made readable by exactly this user.
USER 10001
EXPOSE 8400
CMD ["strongroom", "serve", "gateway"]
