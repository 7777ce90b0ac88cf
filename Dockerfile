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
    && useradd --system --uid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin strongroom \
    && mkdir -p /var/lib/strongroom/audit-archive && chown -R 10001:10001 /var/lib/strongroom

# auditsvc's archives: a writable volume (compose and Kubernetes mount one here); the image's own
# files stay read-only for the service user.
ENV STRONGROOM_ARCHIVE_DIR=/var/lib/strongroom/audit-archive

# Fixed uid so the keysvc secret files on the host can be made readable by exactly this user.
USER 10001
EXPOSE 8400
CMD ["strongroom", "serve", "gateway"]
