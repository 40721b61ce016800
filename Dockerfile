# syntax=docker/dockerfile:1
# dst-load-controller: one static-ish binary on distroless, non-root, fit for
# a read-only root filesystem (it writes nothing but stdout/stderr, and its
# --report/--junit files where told).
#
#   docker build -t dst-load-controller:latest .
#   k3d image import dst-load-controller:latest --cluster dst-load

ARG RUST_VERSION=1.91
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: built from the manifests and the
# lock file with a placeholder crate, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY dst-load-controller/Cargo.toml dst-load-controller/build.rs dst-load-controller/
# The commit `--version` and every report name (there is no .git in the build):
# docker build --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG GIT_COMMIT=""
ENV DST_GIT_COMMIT=${GIT_COMMIT}
RUN mkdir -p dst-load-controller/src \
 && echo 'fn main() {}' > dst-load-controller/src/main.rs \
 && touch dst-load-controller/src/lib.rs \
 && cargo build --profile dist --locked --bin dst-load-controller \
 && rm -rf dst-load-controller/src

COPY dst-load-controller/src dst-load-controller/src
# The built-in scenarios are embedded in the binary.
COPY dst-load-controller/scenarios dst-load-controller/scenarios
# Newer mtimes than the placeholder's build, so cargo rebuilds our crate.
# The dist profile (Cargo.toml) is the release build stripped of symbols.
RUN touch dst-load-controller/src/main.rs dst-load-controller/src/lib.rs \
 && cargo build --profile dist --locked --bin dst-load-controller \
 && cp target/dist/dst-load-controller /dst-load-controller

# glibc and libgcc only; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /dst-load-controller /usr/local/bin/dst-load-controller
USER 65532:65532
# churn 9990, client 9991, mock-dst admin 9992 and gRPC 8086, run 9993: each listens on
# loopback unless given an address (`--admin-addr 0.0.0.0:9991`, `mock-dst -a 0.0.0.0:8086`).
EXPOSE 9990 9991 9992 9993 8086
ENTRYPOINT ["/usr/local/bin/dst-load-controller"]
CMD ["--help"]
