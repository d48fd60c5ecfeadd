# syntax=docker/dockerfile:1
# Images of the worker (`tidemark`, what the operator's StatefulSet pods run) and the operator.
#
#   docker build --target worker   -t ghcr.io/tidemark/tidemark:0.1.0 .
#   docker build --target operator -t ghcr.io/tidemark/tidemark-operator:0.1.0 .
#
# Both run as the distroless `nonroot` user (65532, the uid the chart and the operator's pod
# templates set) on a read-only root file system; neither needs a shell. The worker links
# librdkafka (built from source by rdkafka-sys, with zlib and OpenSSL) and the system's
# libssl3, which the distroless `cc` base carries.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tidemark-worker --bin tidemark \
 && cargo build --release --locked -p tidemark-operator --bin tidemark-operator \
 && cp target/release/tidemark target/release/tidemark-operator /usr/local/bin/

FROM gcr.io/distroless/cc-debian12:nonroot AS worker
COPY --from=build /usr/local/bin/tidemark /usr/local/bin/tidemark
USER 65532:65532
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/tidemark"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /usr/local/bin/tidemark-operator /usr/local/bin/tidemark-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tidemark-operator"]
