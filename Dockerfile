# syntax=docker/dockerfile:1
# callhook container image: a release build in a Rust image, run from a small Debian image
# as a non-root user, listening on 0.0.0.0:8080 with a health check.
#
#   docker build -t callhook .
#   docker run -p 8080:8080 -v callhook-data:/var/lib/callhook \
#     -e CALLHOOK_SDKAPPIDS=1400000001 callhook

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin callhook \
    && install -m 0755 target/release/callhook /usr/local/bin/callhook

FROM debian:bookworm-slim
# ca-certificates: `callhook send` to HTTPS URLs. Not version-pinned on purpose: bookworm's
# security updates replace old package versions, and a pinned one stops building.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/callhook --create-home callhook
COPY --from=build /usr/local/bin/callhook /usr/local/bin/callhook
USER 10001:10001
WORKDIR /var/lib/callhook
# SQLite file and outage spool live on the volume; set CALLHOOK_DATABASE_URL to a
# postgres:// URL for production.
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
