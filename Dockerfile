# syntax=docker/dockerfile:1
# The privacy-operator image: the controller (`privacy-operator run`, the default command) and,
# from the same binary, the worker that built-in connector Jobs run (`privacy-operator worker`).
# The Helm chart in charts/privacy-operator runs it; tests/dockerfile.rs checks this file.
#
#   docker build -t ghcr.io/privacy-operator/privacy-operator:0.1.0 .

ARG RUST_VERSION=1.95

# ---- build ---------------------------------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# Only what the binary is built from (see .dockerignore); the lock file pins every dependency.
COPY Cargo.toml Cargo.lock ./
COPY emulator ./emulator
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin privacy-operator \
    && install -D -m 0755 target/release/privacy-operator /out/privacy-operator

# ---- runtime -------------------------------------------------------------------------------
# distroless cc: glibc and libgcc for the binary (aws-lc links against them), CA certificates,
# tzdata; no shell, no package manager. Pin a digest in release pipelines.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="privacy-operator" \
      org.opencontainers.image.description="A Kubernetes operator that turns privacy obligations (GDPR, CCPA, LGPD) into declarative resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/privacy-operator/privacy-operator"
COPY --from=builder /out/privacy-operator /usr/local/bin/privacy-operator
# nonroot (65532), matching the chart's runAsUser/runAsGroup.
USER 65532:65532
# /metrics and /healthz + /readyz: the chart's metrics.port and health.port.
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/privacy-operator"]
CMD ["run"]
