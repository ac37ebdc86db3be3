# syntax=docker/dockerfile:1
# spillway's four services and the operator command in one image; the command picks which:
#   docker build -t spillway .
#   docker run spillway gateway        (or counter, batch-writer, template-warmup)
#   docker run spillway spillway-admin migrate      (database migrations; also `healthcheck`)
# docker-compose.yml builds it; the Helm chart runs it with command /usr/local/bin/<binary>.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# rdkafka builds its bundled librdkafka with librdkafka's own configure script and make, with
# zlib (the default `libz` feature); aws-lc-sys (rustls' crypto provider for the S3 client)
# needs cmake and a C compiler. Protobuf is compiled by protox: no protoc.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config zlib1g-dev perl python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The commit the binaries report in spillway_build_info and their start-up line:
#   docker build --build-arg SPILLWAY_BUILD_COMMIT="$(git rev-parse --short=12 HEAD)" .
ARG SPILLWAY_BUILD_COMMIT=unknown
# The image's toolchain is the one rust-toolchain.toml names (RUST_VERSION); .dockerignore
# leaves that file out so rustup does not fetch components the build does not need.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p gateway -p counter -p batch-writer -p template-warmup -p spillway-admin \
    && mkdir -p /out \
    && cp target/release/gateway target/release/counter target/release/batch-writer \
        target/release/template-warmup target/release/spillway-admin /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 spillway \
    && useradd --system --uid 10001 --gid spillway --no-create-home --shell /usr/sbin/nologin spillway
COPY --from=builder /out/ /usr/local/bin/
COPY config/spillway.toml /etc/spillway/spillway.toml
ENV SPILLWAY_CONFIG=/etc/spillway/spillway.toml
USER 10001:10001
EXPOSE 8080 8081 8082 8083
CMD ["gateway"]
