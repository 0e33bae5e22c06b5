# jobd as a container image.
#
#   podman build --pull=never --format docker --network=host -t localhost/jobd .   # or: docker build -t jobd .
#   podman run -d --name jobd -p 127.0.0.1:8080:8080 -v jobd-data:/data -e JOBD_TOKEN=change-me localhost/jobd
#
# The image listens on 0.0.0.0:8080, so it needs a token (JOBD_TOKEN, or a
# mounted --token-file) or, on a trusted network only, JOBD_INSECURE_NO_AUTH=1:
# see "Container" in docs/OPERATIONS.md. Settings are JOBD_* variables or
# flags after the image name (they are passed to jobd).

# ---- build stage: compilers and -dev packages, never shipped --------------
FROM debian:bookworm-slim AS build
# The Makefile's DEPS_BUILD, installed here so that nothing in `make` runs apt.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      build-essential pkg-config libmicrohttpd-dev libcjson-dev libsqlite3-dev libuv1-dev \
      libcurl4-openssl-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make build/jobd && strip -o /jobd build/jobd

# ---- runtime stage: the binary, its shared libraries, tini ----------------
FROM debian:bookworm-slim
# Runtime libraries of build/jobd (ldd: libmicrohttpd, libcjson, libsqlite3,
# libuv, libcurl, libcrypto), CA certificates for http_get over https, and tini.
# curl is for HEALTHCHECK only: jobd links libcurl4 anyway, so the curl binary
# adds under 0.5 MB, and it is a real HTTP client with a timeout (a bash
# /dev/tcp probe would parse HTTP by hand and hang on a stuck server).
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libmicrohttpd12 libcjson1 libsqlite3-0 libuv1 libcurl4 libssl3 ca-certificates tini curl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 jobd \
 && useradd --system --uid 10001 --gid jobd --home-dir /data --no-create-home --shell /usr/sbin/nologin jobd \
 && mkdir -p /data && chown jobd:jobd /data && chmod 0750 /data
COPY --from=build /jobd /usr/local/bin/jobd
# Fails the build if a shared library is missing from the list above.
RUN if ldd /usr/local/bin/jobd | grep 'not found'; then exit 1; fi && /usr/local/bin/jobd --version

USER jobd:jobd
WORKDIR /data
VOLUME /data
ENV JOBD_DB=/data/jobd.db \
    JOBD_LISTEN=0.0.0.0:8080
EXPOSE 8080
# /healthz needs no token. The port comes from JOBD_LISTEN (a --listen flag
# given to `run` is not seen here: change JOBD_LISTEN instead).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null --max-time 4 "http://127.0.0.1:${JOBD_LISTEN##*:}/healthz" || exit 1
# jobd drains on SIGTERM (running jobs get --grace seconds, default 30) and
# exits 0; give `stop` a timeout above the grace (docker/podman stop -t 40).
STOPSIGNAL SIGTERM
# tini is PID 1: it forwards signals to jobd and reaps orphaned grandchildren
# (programs started by exec and command tasks). Without -g: jobd stops its own
# worker processes while it drains.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/jobd"]
