# syntax=docker/dockerfile:1
# ebb's image: a static (musl) `ebb` binary on distroless, running as non-root.
#   docker build --build-arg EBB_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t ebb:dev .
# Not built in CI here (no container engine on the build machine); kept correct by inspection.

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
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/ebb /ebb
USER 65532:65532
# 6443: the external metrics API (HTTPS); 8080: /healthz, /readyz, /metrics.
EXPOSE 6443 8080
ENTRYPOINT ["/ebb"]
CMD ["run", "--log-format=json"]
