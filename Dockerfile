# syntax=docker/dockerfile:1
#
# digital-employee container image.
#
#   docker build -t digital-employee:1.0.0 .
#   docker run --rm -p 8000:8000 -p 9000:9000 digital-employee:1.0.0
#
# Stage 1 compiles against Cargo.lock (--locked: a build never silently
# resolves newer crates than the ones CI tested). Dependencies are compiled in
# their own layer from a stub crate, so editing src/ only recompiles this
# crate. Stage 2 is a slim Debian with the binary, CA certificates (TLS to the
# AI vendors) and an unprivileged user; no compiler, no shell tools beyond
# coreutils (the Kubernetes preStop hook uses `sleep`).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

############################  build  ############################
FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# 1. Dependency layer: only the manifests, plus an empty lib and main so that
#    cargo can build every dependency. This layer is reused until Cargo.toml
#    or Cargo.lock change. (If Cargo.toml ever declares [[bench]]/[[test]]
#    targets with explicit paths, stub those paths here as well.) .cargo/config.toml
#    sets the flags the bundled SQLite is compiled with.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
RUN mkdir -p src \
    && printf 'fn main() {}\n' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# 2. The real crate. Migrations are embedded at compile time (build.rs makes
#    cargo rebuild when they change), so they are part of the build context.
#    `cargo clean -p` drops the stub's artifacts: COPY keeps the files'
#    original mtimes, which can be older than the stub build, and cargo would
#    otherwise think the stub binary is still fresh.
COPY build.rs ./
COPY src ./src
COPY migrations ./migrations
RUN cargo clean --release -p digital-employee \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/digital-employee /out/digital-employee

############################  runtime  ############################
FROM ${RUNTIME_IMAGE} AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Fixed uid/gid 10001: Kubernetes' runAsUser and file ownership on volumes
# refer to the number, and a number outside the distribution's range cannot
# collide with a system account.
RUN groupadd --system --gid 10001 appuser \
    && useradd --system --uid 10001 --gid appuser \
        --home-dir /var/lib/digital-employee --no-create-home \
        --shell /usr/sbin/nologin appuser \
    && install -d -o appuser -g appuser -m 0750 /var/lib/digital-employee

COPY --from=builder /out/digital-employee /usr/local/bin/digital-employee

# The development profile keeps its SQLite file here; production sets
# DATABASE_URL and uses this directory only for scratch data.
ENV DATA_DIR=/var/lib/digital-employee
WORKDIR /var/lib/digital-employee

# Numeric form of appuser so that Kubernetes' runAsNonRoot can verify it
# without reading /etc/passwd inside the image.
USER 10001:10001

# 8000: HTTP API. 9000: Prometheus /metrics (never exposed publicly).
EXPOSE 8000 9000

# The binary checks itself: no curl or wget in the image.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/digital-employee","health-check","--only","app","--url","http://127.0.0.1:8000"]

# SIGTERM starts the graceful drain: /ready turns 503, no new task claims,
# in-flight work gets the grace period.
STOPSIGNAL SIGTERM

ENTRYPOINT ["/usr/local/bin/digital-employee"]
CMD ["serve"]
