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

# The crate's rust-version (Cargo.toml); the test keeps them equal.
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
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

FROM debian:bookworm-slim

# The hook is launched over ssh; the finalizer commits and pushes with git.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bash ca-certificates git openssh-client \
    && rm -rf /var/lib/apt/lists/*

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

COPY --from=builder /out/selfdeploy /usr/local/bin/selfdeploy

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
      org.opencontainers.image.description="A persisted state machine that deploys a service which cannot restart itself" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.4.0" \
      org.opencontainers.image.revision="${REVISION}"
