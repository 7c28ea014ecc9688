# selfdeploy in a container; by default it runs `selfdeploy watch`, the
# long-running finalizer. docs/operations/REPLICATION.md ("Container") says
# how to build and run it; compose.yaml runs it with every setting.
#
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" \
#       --build-arg APP_UID="$(id -u)" --build-arg APP_GID="$(id -g)" \
#       -t selfdeploy .
#
# The runtime user mirrors the host user that owns the shared REPOS_DIR
# mount (APP_UID, APP_GID), so the state files written on either side have
# the same owner. The cache mounts need BuildKit (Docker's default builder).
# tests/it/container.rs checks this file against Cargo.toml and the registry.
#
# Where no registry can be reached, the bases are arguments: BUILDER_IMAGE
# (the Rust toolchain) and RUNTIME_IMAGE (Debian bookworm; one that already
# has bash, git, openssh-client and ca-certificates installs nothing, e.g.
# scripts/base-image.sh's). BINARY=prebuilt takes the binary from
# prebuilt/selfdeploy in the build context instead of compiling it (a
# binary built on the host for the same Debian); the runtime stage is the
# same either way. scripts/container-e2e.sh builds it so.

# The crate's rust-version (Cargo.toml); the test keeps them equal.
ARG RUST_VERSION=1.89
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY=builder

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /build
# What `cargo build` reads: the manifest and lock, the sources, the declared
# benches ([[bench]] targets must exist) and the scripts src/ embeds
# (include_str!).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY scripts ./scripts
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/selfdeploy /out/selfdeploy

# A binary built elsewhere, from the build context.
FROM scratch AS prebuilt
COPY prebuilt/selfdeploy /out/selfdeploy

# The binary, from whichever stage BINARY names.
FROM ${BINARY} AS binary

FROM ${RUNTIME_IMAGE}

# The hook is launched over ssh; the finalizer commits and pushes with git.
# A base that has them already installs nothing (and needs no network).
RUN if command -v bash git ssh >/dev/null 2>&1 \
        && [ "$(command -v bash git ssh | wc -l)" = 3 ] \
        && [ -e /etc/ssl/certs/ca-certificates.crt ]; then \
        echo "the base has every tool the runtime needs"; \
    else \
        apt-get update \
        && apt-get install -y --no-install-recommends \
            bash ca-certificates git openssh-client \
        && rm -rf /var/lib/apt/lists/*; \
    fi

ARG APP_UID=1000
ARG APP_GID=1000
ARG APP_USER=selfdeploy
ARG APP_HOME=/home/selfdeploy

# A group that already has APP_GID (such as 100, users) is used as it is.
# ~/.ssh exists, owned by the user, for the key mounted there read-only.
RUN if ! getent group "${APP_GID}" >/dev/null; then \
        groupadd --gid "${APP_GID}" "${APP_USER}"; \
    fi \
    && useradd --no-log-init --uid "${APP_UID}" --gid "${APP_GID}" \
        --home-dir "${APP_HOME}" --create-home --shell /bin/bash "${APP_USER}" \
    && install -d -m 0700 -o "${APP_UID}" -g "${APP_GID}" "${APP_HOME}/.ssh"

COPY --from=binary /out/selfdeploy /usr/local/bin/selfdeploy

USER ${APP_USER}
WORKDIR ${APP_HOME}
ENTRYPOINT ["selfdeploy"]
CMD ["watch"]

# Last, so that a new revision rebuilds no layer. REVISION is the commit the
# image is built from (the label the reference hook's provenance check reads);
# SOURCE_URL is where that commit can be fetched.
ARG REVISION=
ARG SOURCE_URL=
LABEL org.opencontainers.image.title="selfdeploy" \
      org.opencontainers.image.description="Persisted state machine that deploys a service which cannot restart itself" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.4.0" \
      org.opencontainers.image.revision="${REVISION}"
