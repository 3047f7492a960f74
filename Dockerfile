# syntax=docker/dockerfile:1
# knative-pilot image: a static release binary on distroless/static, non-root (uid 65532, as the
# Deployment's securityContext in manifests/base/deployment.yaml).
#
#   docker build -t REGISTRY/knative-pilot:TAG .
#   docker push REGISTRY/knative-pilot:TAG
#
# The binary is linked statically against glibc (crt-static), so the runtime image needs no
# libc: it reads the API server address from KUBERNETES_SERVICE_HOST (an IP) and resolves no
# names itself. The build takes about 12 minutes on 2 cores.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that source-only changes reuse the cached layer.
COPY Cargo.toml Cargo.lock ./
COPY benches benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
       --target x86_64-unknown-linux-gnu --bin knative-pilot \
    ; rm -rf src
COPY proto proto
COPY src src
RUN touch src/main.rs src/lib.rs \
    && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
       --target x86_64-unknown-linux-gnu --bin knative-pilot \
    && cp target/x86_64-unknown-linux-gnu/release/knative-pilot /knative-pilot

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /knative-pilot /knative-pilot
# On nodes whose transparent huge pages are `always` (not `madvise`), the kernel would still back
# the allocator's regions with huge pages; this makes mimalloc turn them off for the process
# (prctl PR_SET_THP_DISABLE). See Cargo.toml's mimalloc line.
ENV MIMALLOC_ALLOW_THP=0
USER 65532:65532
ENTRYPOINT ["/knative-pilot"]
CMD ["serve", "--kube"]
