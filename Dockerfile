# imagestore as one executable in a slim image.
#   docker build -t imagestore .
#   docker run -d -p 3333:3333 -v imagestore-data:/data -e IMAGESTORE_MQTT_HOST=broker imagestore
# docker-compose.yml runs it beside a mosquitto broker.

# Builder: the very `make build` that developers and CI run (`make test` builds with
# it too), on the runtime's Debian release, so the executable finds the same glibc.
# The Makefile installs what it needs: python3, python3-venv, binutils, libpython3.11,
# then the pinned requirements-build.txt into a virtualenv, then runs PyInstaller.
FROM debian:bookworm-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends make ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make build

# Runtime: Debian's slim base (glibc, and bash for the health check); no Python.
FROM debian:bookworm-slim
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin imagestore \
    && mkdir /data \
    && chown imagestore:imagestore /data
COPY --from=builder /src/dist/imagestore /usr/local/bin/imagestore
# The data folder (catalog and images) lives on the volume. The executable unpacks its
# libraries into /tmp at each start: /tmp must stay writable and allow exec.
ENV IMAGESTORE_DATA=/data \
    IMAGESTORE_PORT=3333
VOLUME ["/data"]
EXPOSE 3333
USER imagestore
WORKDIR /data
# GET /healthz over bash's /dev/tcp: no curl or wget in the image. (tests/test_executable.py
# runs this very command against dist/imagestore.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${IMAGESTORE_PORT:-3333} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == HTTP/1.?' 200 '* ]]"]
# The bootloader passes SIGTERM (docker stop) on to the service, which drains requests
# in flight (IMAGESTORE_SHUTDOWN_GRACE_SECONDS, 10 s) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/imagestore"]
