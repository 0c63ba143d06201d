# syntax=docker/dockerfile:1
# ebb's image: a static (musl) `ebb` binary on distroless, running as non-root.
#   docker build -t ghcr.io/ebb-sh/ebb:0.1.0 \
#     --build-arg EBB_GIT_COMMIT=$(git rev-parse HEAD) \
#     --build-arg EBB_CREATED=$(git log -1 --format=%cI HEAD) .
# For users with a container engine. CI has none: `cargo xtask image` builds the same image
# (same binary, user, entrypoint, command, ports, environment and label keys; its base is not
# distroless) without one, as an OCI archive in target/image/, and the suite unpacks it and
# runs its binary (docs/operations.md, "The image").

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# `ebb version` names the commit; the context has no .git (see .dockerignore).
ARG EBB_GIT_COMMIT=unknown
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
      --package ebb-operator --bin ebb \
 && strip target/x86_64-unknown-linux-musl/release/ebb

# CA certificates (for brokers over TLS) and nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
ARG EBB_GIT_COMMIT=unknown
ARG EBB_CREATED=unknown
# The workspace's version (Cargo.toml); the suite's image test holds them equal.
ARG EBB_VERSION=0.1.0
LABEL org.opencontainers.image.title="ebb" \
      org.opencontainers.image.description="Event-driven autoscaling for Kubernetes, compatible with KEDA's API" \
      org.opencontainers.image.version="${EBB_VERSION}" \
      org.opencontainers.image.revision="${EBB_GIT_COMMIT}" \
      org.opencontainers.image.created="${EBB_CREATED}" \
      org.opencontainers.image.source="https://example.invalid/ebb" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/ebb /ebb
USER 65532:65532
# 6443: the external metrics API (HTTPS); 8080: /healthz, /readyz, /metrics; 9443: the
# admission webhook (HTTPS, with --admission-addr as deploy/ sets it).
EXPOSE 6443 8080 9443
ENTRYPOINT ["/ebb"]
CMD ["run", "--log-format=json"]
