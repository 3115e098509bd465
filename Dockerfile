# The redis-k8s-election image: one static (musl) binary on an empty base, run as non-root.
# The build step is scripts/build-static.sh, the same command CI uses to check the binary
# is static, runs, and stays under 15 MB.
FROM docker.io/library/rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/build-static.sh

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/redis-k8s-election /redis-k8s-election
USER 65532:65532
ENTRYPOINT ["/redis-k8s-election"]
CMD ["sidecar"]
