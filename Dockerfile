# syntax=docker/dockerfile:1
#
# One image for every ACS service; the command picks the service:
#   docker run IMAGE gateway | orchestrator | inventory | fileserver | router | topics --ensure
#
# Stage 1 builds a wheel of the project, stage 2 installs it (without the `local` extra, whose
# servers are for machines without Docker) into a virtualenv, stage 3 copies only that virtualenv
# onto a clean slim image that runs as the unprivileged user 10001 and never writes outside /tmp.
#
# There is no HEALTHCHECK here on purpose: each service answers /healthz on its own port, so the
# check belongs to the service definition (docker-compose.yml, deploy/ probes), not to the image.

ARG PYTHON_IMAGE=python:3.11-slim

# --- 1. wheel ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md and the Python packages.
COPY . .
RUN pip wheel --no-deps --wheel-dir /dist .

# --- 2. virtualenv -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=wheel /dist /dist
RUN python -m venv /opt/acs \
 && /opt/acs/bin/pip install /dist/acs-*.whl \
 && /opt/acs/bin/pip check \
 && /opt/acs/bin/acs --help > /dev/null

# --- 3. runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG ACS_UID=10001
LABEL org.opencontainers.image.title="acs" \
      org.opencontainers.image.description="TR-069 (CWMP) Auto-Configuration Server: gateway, orchestrator, inventory, fileserver, router" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid "${ACS_UID}" acs \
 && useradd --uid "${ACS_UID}" --gid "${ACS_UID}" --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin acs
COPY --from=venv /opt/acs /opt/acs
# The root filesystem is read-only in production: bytecode was compiled at install time, and the
# only writable place is /tmp (an emptyDir / tmpfs). Services listen on every interface in a
# container (the settings default is 127.0.0.1, right for `acs up`, wrong here).
ENV PATH=/opt/acs/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    ACS_BIND_HOST=0.0.0.0
WORKDIR /tmp
USER 10001:10001
# 7547 CWMP (gateway), 7557 northbound router, 7560 orchestrator, 7561 inventory,
# 7562 fileserver API, 7567 CPE file downloads (fileserver).
EXPOSE 7547 7557 7560 7561 7562 7563 7567
ENTRYPOINT ["acs"]
CMD ["--help"]
