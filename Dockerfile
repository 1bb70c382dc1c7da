# syntax=docker/dockerfile:1
# callhook container image: a release build in a Rust image, run from a small Debian image
# as a non-root user (uid and gid 10001), listening on 0.0.0.0:8080 with a health check.
#
#   docker build -t callhook .
#   docker run -p 8080:8080 -v callhook-data:/var/lib/callhook \
#     -e CALLHOOK_SDKAPPIDS=1400000001 callhook
#
# The base images are build arguments so that a machine without registry access can pass
# equivalents it made itself (CI does: ci/container-test.sh). The defaults are the
# official images.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY migrations ./migrations
# The release profile has no debug info (Cargo.toml; the binary is 17 MB). The strip is a
# guard in case a profile adds some back; it keeps the symbols, so a backtrace still names
# the functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin callhook \
    && install -m 0755 target/release/callhook /usr/local/bin/callhook \
    && strip --strip-debug /usr/local/bin/callhook

FROM ${RUNTIME_IMAGE}
# ca-certificates: `callhook send` to HTTPS URLs. Not version-pinned on purpose: bookworm's
# security updates replace old package versions, and a pinned one stops building.
# The user and its group are both 10001 (USER below names them by number), with no home
# directory of its own: /var/lib/callhook is the data volume and holds only data.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 callhook \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/callhook --shell /usr/sbin/nologin callhook \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/callhook
COPY --from=build /usr/local/bin/callhook /usr/local/bin/callhook
USER 10001:10001
WORKDIR /var/lib/callhook
# SQLite file and outage journal live on the volume; set CALLHOOK_DATABASE_URL to a
# postgres:// URL for production. `callhook healthcheck` probes the address in
# CALLHOOK_LISTEN, so changing the port here keeps the HEALTHCHECK working.
ENV CALLHOOK_LISTEN=0.0.0.0:8080 \
    CALLHOOK_DATABASE_URL=sqlite:///var/lib/callhook/callhook.db \
    CALLHOOK_SPOOL_DIR=/var/lib/callhook/spool \
    CALLHOOK_LOG_FORMAT=json
VOLUME ["/var/lib/callhook"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["callhook", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["callhook"]
CMD ["serve"]
