#!/usr/bin/env bash
# The real self-deploy, end to end, with the real container engine: the
# platform (the project's own image, from its Dockerfile, run from
# compose.yaml's service) approves its own new version; the host wrapper,
# reached over a loopback sshd, runs the reference hook with the real docker,
# which replaces that very container; the new container finalizes.
#
#   scripts/container-e2e.sh
#
# Four scenes, one line each: a deploy that SUCCEEDs, a broken release that
# is rolled back (FAILED), the platform killed right after the approval
# (no second hook run, finalized once), and the owner of every file the
# containers wrote. Exits 0 only when all hold; cleans up every container,
# network and image it made (the cached base image stays).
#
# Needs root (debootstrap, a state directory owned by another uid), docker
# with BuildKit (buildx, or a client with BuildKit built in), compose (the
# plugin or docker-compose), debootstrap, openssh-server, git, cargo.
# Everything talks to 127.0.0.1 only. Environment: SELFDEPLOY_BIN (a binary
# to use instead of `cargo build --release --locked`), APP_UID and APP_GID
# (the owner of the shared directory and the containers' user, 4242),
# E2E_KEEP=1 (keep the work directory and print it).
# docs/operations/REPLICATION.md ("The real scene") walks through it.
set -euo pipefail
# A failing command inside $(...) fails the caller too.
shopt -s inherit_errexit

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
uid=${APP_UID:-4242}
gid=${APP_GID:-4242}
project=selfdeploy-e2e
image=selfdeploy-e2e
base=selfdeploy-base:bookworm
repo=orchestrator
branch=deploy/e2e
started=$(date +%s)

say() { printf '%s\n' "$*"; }
fail() {
    say "FAIL: $*" >&2
    exit 1
}

# ------------------------------------------------------------ the tools ----

command -v docker >/dev/null || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "the docker engine does not answer (docker info)"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    fail "neither the docker compose plugin nor docker-compose is installed"
fi
for tool in git ssh sshd debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        fail "$tool is not installed"
done
[ "$(id -u)" = 0 ] || fail "run it as root (debootstrap, and a state directory owned by uid $uid)"

# A docker client that builds with BuildKit (the Dockerfile's cache mounts,
# and stages a build does not need are skipped): buildx, else a client with
# BuildKit built in (DOCKER_BUILDKIT=1).
probe=$(mktemp -d)
printf 'FROM scratch\nLABEL probe=1\n' >"$probe/Dockerfile"
builder=()
if docker buildx version >/dev/null 2>&1; then
    builder=(docker build)
else
    while IFS= read -r candidate; do
        if DOCKER_BUILDKIT=1 "$candidate" build -q -t "$image:probe" "$probe" >/dev/null 2>&1; then
            builder=(env DOCKER_BUILDKIT=1 "$candidate" build)
            break
        fi
    done < <(type -ap docker | awk '!seen[$0]++')
fi
rm -rf -- "$probe"
docker image rm -f "$image:probe" >/dev/null 2>&1 || true
[ "${#builder[@]}" -gt 0 ] ||
    fail "no docker client here builds with BuildKit (buildx, or a client with it built in such as Debian's docker.io)"

# ------------------------------------------------------- the work place ----

work=$(mktemp -d "${TMPDIR:-/tmp}/selfdeploy-e2e.XXXXXX")
chmod 755 "$work"
app=$work/app
state=$work/state
inside=/data/state
# Compose in the host's checkout, with its .env alone: nothing exported in
# this shell (a REPOS_DIR, a COMPOSE_FILE) overrides what the hook will see.
in_app() { (cd "$app" && env -i PATH="$PATH" HOME="$HOME" "$@"); }
cleanup() {
    local status=$?
    set +e
    # A hook still running (a scene failed midway) would recreate the
    # platform after it is gone: its wrapper's command line names $work.
    pkill -f -- "$work/" >/dev/null 2>&1
    if [ -f "$app/.env" ]; then
        in_app "${compose[@]}" down --remove-orphans --timeout 5 >/dev/null 2>&1
    fi
    docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null 2>&1
    docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null 2>&1
    bash "$here/scripts/loopback-sshd.sh" stop "$work/sshd" >/dev/null 2>&1
    docker image ls --format '{{.Repository}}:{{.Tag}}' | grep "^$image:" | xargs -r docker image rm -f >/dev/null 2>&1
    if [ "${E2E_KEEP:-}" = 1 ]; then
        say "kept: $work"
    else
        rm -rf -- "$work"
    fi
    exit "$status"
}
trap cleanup EXIT

# The base image, the binary, the loopback sshd.
bash "$here/scripts/base-image.sh" "$base" >/dev/null
bin=${SELFDEPLOY_BIN:-}
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release --locked --quiet)
    bin=${CARGO_TARGET_DIR:-$here/target}/release/selfdeploy
fi
[ -x "$bin" ] || fail "no binary at $bin"
bash "$here/scripts/loopback-sshd.sh" start "$work/sshd" >/dev/null
ssh_port=$(sed -n 's/^Port //p' "$work/sshd/sshd_config")

# The containers' ssh directory: the loopback client key, the server's key,
# every host sent to the loopback server as this user.
mkdir -p "$work/ssh"
cp "$work/sshd/client_key" "$work/ssh/id_ed25519"
printf '[127.0.0.1]:%s %s\n' "$ssh_port" "$(cut -d' ' -f1,2 "$work/sshd/host_key.pub")" >"$work/ssh/known_hosts"
cat >"$work/ssh/config" <<CONFIG
Host *
    HostName 127.0.0.1
    Port $ssh_port
    User $(id -un)
    IdentityFile ~/.ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts
    BatchMode yes
    LogLevel ERROR
CONFIG
chown -R "$uid:$gid" "$work/ssh"
chmod 700 "$work/ssh"
chmod 600 "$work/ssh/"*

# The shared state directory, owned by the containers' user, with the
# platform's git worktree and its remote.
mkdir -p "$state/.e2e"
git init -q --bare "$state/.e2e/remote.git"
git init -q -b main "$state/.e2e/worktree"
wt() { git -C "$state/.e2e/worktree" -c safe.directory='*' "$@"; }
wt config user.email e2e@example.invalid
wt config user.name e2e
wt remote add origin "$inside/.e2e/remote.git"
mkdir -p "$state/.e2e/worktree/docs/work-items"
echo "the platform" >"$state/.e2e/worktree/README"
wt add README
wt commit -q -m "v1"
wt checkout -q -b "$branch"
wt push -q "$state/.e2e/remote.git" "$branch" 2>/dev/null
chown -R "$uid:$gid" "$state"

# The host's checkout: the hook, the compose files, the settings.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        if port_free "$p"; then
            echo "$p"
            return
        fi
    done
    fail "no free port"
}
target_port=$(free_port)
staging_port=$(free_port)
[ "$target_port" != "$staging_port" ] || staging_port=$((target_port + 1))
mkdir -p "$app/scripts"
cp "$here/compose.yaml" "$app/compose.yaml"
cp "$here/scripts/e2e/compose.e2e.yaml" "$app/compose.e2e.yaml"
cp "$here/scripts/deploy-hook.sh" "$app/scripts/deploy-hook.sh"
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
cat >"$app/.env" <<ENV
COMPOSE_PROJECT_NAME=$project
COMPOSE_FILE=compose.yaml:compose.e2e.yaml
APP_UID=$uid
APP_GID=$gid
SSH_DIR=$work/ssh
REPOS_DIR=$inside
HOST_REPOS_DIR=$state
SELF_DEPLOY_TRANSPORT=ssh
DEPLOY_SSH_USER=$(id -un)
DEPLOY_SSH_HOST=127.0.0.1
DEPLOY_HOST_REPO_PATH=$app
DEPLOY_HOOK_SCRIPT=scripts/deploy-hook.sh
DEPLOY_PROD_SOURCE_IMAGE=$image:staging
DEPLOY_PROD_TARGET_SERVICE=selfdeploy-watch
DEPLOY_PROD_TARGET_PORT=$target_port
DEPLOY_PROD_TARGET_IMAGE=$image:prod
DEPLOY_PROD_COMPOSE_PROFILE=
DEPLOY_PROD_PREV_IMAGE_FILE=$work/prev-image
STAGING_PORT=$staging_port
AGENT_HOME_DIR=/home/selfdeploy
GIT_EMAIL_DOMAIN=e2e.example.invalid
SELF_DEPLOY_WATCH_RESCAN_SECS=1
HISTORY_HMAC_KEY=$key
ENV

# ------------------------------------------------------------ the images ---

context=$work/context
mkdir -p "$context/prebuilt"
cp "$here/Dockerfile" "$context/Dockerfile"
cp "$bin" "$context/prebuilt/selfdeploy"
# build TAG REVISION: the project's Dockerfile on the Debian base, with the
# binary built on this host.
build() {
    "${builder[@]}" -q -t "$1" \
        --build-arg RUNTIME_IMAGE="$base" --build-arg BINARY=prebuilt \
        --build-arg APP_UID="$uid" --build-arg APP_GID="$gid" \
        --build-arg REVISION="$2" "$context" >/dev/null ||
        fail "docker build of $1 failed"
}
label_of() {
    docker inspect --format '{{ index .Config.Labels "org.opencontainers.image.revision" }}' "$1"
}
# A new commit on the platform's branch, as the directory's owner (so that
# the ownership scene sees only what the containers and the host wrote):
# the revision of the next release.
as_owner() { setpriv --reuid="$uid" --regid="$gid" --clear-groups env HOME=/ "$@"; }
release() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    as_owner bash -c 'echo "$1" >>"$2/README"' release "$1" "$state/.e2e/worktree"
    as_owner git -C "$state/.e2e/worktree" add README
    as_owner git -C "$state/.e2e/worktree" -c user.email=e2e@example.invalid -c user.name=e2e \
        commit -q -m "$1"
}

rev1=$(wt rev-parse HEAD)
build "$image:v1" "$rev1"
docker tag "$image:v1" "$image:prod"

# ------------------------------------------------------------ the scene ----

# The platform's one container (two while compose recreates it: an error).
platform() {
    local ids
    ids=$(in_app "${compose[@]}" ps -q selfdeploy-watch)
    if [ -z "$ids" ] || [ "$(wc -l <<<"$ids")" != 1 ]; then
        fail "not one platform container: '${ids//$'\n'/ }'"
    fi
    echo "$ids"
}
healthy() {
    local line
    line=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$target_port; printf 'GET /health HTTP/1.0\r\n\r\n' >&3; head -n1 <&3" 2>/dev/null) || return 1
    [[ $line == "HTTP/1.0 200"* ]]
}
wait_healthy() {
    for _ in $(seq 120); do
        healthy && return 0
        sleep 0.5
    done
    fail "the platform is not healthy on 127.0.0.1:$target_port: $(docker logs --tail 20 "$(platform)" 2>&1)"
}
in_platform() { docker exec "$(platform)" selfdeploy "$@"; }
state_of() {
    in_platform status --repo "$repo" --work-item "$1" --json 2>/dev/null |
        sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p'
}
# wait_final ITEM: the item's final state, once the platform finalized it.
wait_final() {
    local s=""
    for _ in $(seq 300); do
        s=$(state_of "$1" 2>/dev/null || true)
        case $s in
            finalized_success | finalized_failed)
                echo "$s"
                return
                ;;
        esac
        sleep 1
    done
    fail "$1 was not finalized in 300 s (state: ${s:-unknown}); hook.log: $(tail -n 20 "$state/.deploy-state-$repo/$1/hook.log" 2>/dev/null)"
}
approve() {
    local item=$1 revision=$2
    in_platform event request-approve --repo "$repo" --work-item "$item" --actor e2e >/dev/null
    in_platform event approved --repo "$repo" --work-item "$item" --actor e2e \
        --branch "$branch" --worktree "$inside/.e2e/worktree" --revision "$revision" >/dev/null
}
hook_runs() { grep -c "deploying $image:staging as $image:prod" "$state/.deploy-state-$repo/$1/hook.log" 2>/dev/null || true; }
logged_status() {
    git --git-dir "$state/.e2e/remote.git" -c safe.directory='*' \
        show "$branch:docs/work-items/$1/14-deploy-log.md" 2>/dev/null |
        sed -n 's/^deploy_status: //p'
}
# How many history entries finalized the item (a repeat counts as one more).
finalizes() {
    local h
    h=$(in_platform history --repo "$repo" --work-item "$1" --json)
    if grep '"to":"finalized_' <<<"$h" | grep -q '"repeats"'; then
        echo "repeated"
        return
    fi
    grep '"from":"initiated"' <<<"$h" | grep '"outcome":"transitioned"' | grep -c '"to":"finalized_' || true
}
dispatch_of() { sed -n 's/.*"dispatch_id":"\([0-9a-f]*\)".*/\1/p' "$state/.deploy-state-$repo/$1/initiated"; }
# result_is ITEM CODE: the host wrapper (the ssh user) wrote CODE.
result_is() {
    local file
    file=$state/.deploy-state-$repo/$1/result-$(dispatch_of "$1")
    [ -f "$file" ] && [ "$(stat -c %u "$file")" = "$(id -u)" ] && [ "$(tr -d '[:space:]' <"$file")" = "$2" ]
}
image_id() { docker image inspect --format '{{.Id}}' "$1"; }

in_app "${compose[@]}" run --rm --no-deps selfdeploy-watch init >"$work/init.log" 2>&1 ||
    fail "selfdeploy init in the container failed: $(cat "$work/init.log")"
in_app "${compose[@]}" up -d >/dev/null 2>&1 || fail "compose up failed"
wait_healthy
[ "$(label_of "$(platform)")" = "$rev1" ] || fail "v1 is not running"

# 1. Success: v1 approves v2; the hook replaces v1 with v2; v2 finalizes.
release v2
rev2=$(wt rev-parse HEAD)
build "$image:v2" "$rev2"
docker tag "$image:v2" "$image:staging"
v1=$(platform)
approve E2E-1 "$rev2"
final=$(wait_final E2E-1)
running=$(platform)
[ "$final" = finalized_success ] || fail "scene 1: $final, not finalized_success"
[ "$running" != "$v1" ] || fail "scene 1: the v1 container still runs"
[ "$(label_of "$running")" = "$rev2" ] || fail "scene 1: the running container is not v2"
[ "$(logged_status E2E-1)" = SUCCESS ] || fail "scene 1: the pushed deploy log does not say SUCCESS"
[ "$(hook_runs E2E-1)" = 1 ] || fail "scene 1: the hook ran $(hook_runs E2E-1) times"
! docker inspect "$v1" >/dev/null 2>&1 || fail "scene 1: the v1 container that dispatched is still there"
grep -q "carries the expected revision $rev2" "$state/.deploy-state-$repo/E2E-1/hook.log" ||
    fail "scene 1: the hook did not check v2's revision"
[ "$(cat "$work/prev-image")" = "$(image_id "$image:v1")" ] || fail "scene 1: the hook did not keep v1's image id"
result_is E2E-1 0 || fail "scene 1: the host wrapper did not write result 0"
docker logs "$running" 2>&1 | grep -q "E2E-1 finalized" || fail "scene 1: v2 did not finalize it"
[ "$(finalizes E2E-1)" = 1 ] || fail "scene 1: finalized $(finalizes E2E-1) times"
healthy || fail "scene 1: v2 is not healthy"
say "scene 1 success: v1 approved v2, the hook replaced it, v2 finalized SUCCESS (log pushed, hook ran once)"

# 2. Rollback: v3 never comes up; the hook restores v2, which finalizes FAILED.
release v3
rev3=$(wt rev-parse HEAD)
mkdir "$work/v3"
printf 'FROM %s\nLABEL org.opencontainers.image.revision="%s"\nENTRYPOINT ["false"]\n' \
    "$image:v2" "$rev3" >"$work/v3/Dockerfile"
"${builder[@]}" -q -t "$image:v3" "$work/v3" >/dev/null || fail "build of v3 failed"
docker tag "$image:v3" "$image:staging"
approve E2E-2 "$rev3"
final=$(wait_final E2E-2)
running=$(platform)
[ "$final" = finalized_failed ] || fail "scene 2: $final, not finalized_failed"
[ "$(label_of "$running")" = "$rev2" ] || fail "scene 2: v2 is not running again"
healthy || fail "scene 2: v2 is not healthy after the rollback"
grep -q "rolled back:" "$state/.deploy-state-$repo/E2E-2/hook.log" || fail "scene 2: the hook did not roll back"
[ "$(logged_status E2E-2)" = FAILED ] || fail "scene 2: the pushed deploy log does not say FAILED"
[ "$(cat "$work/prev-image")" = "$(image_id "$image:v2")" ] || fail "scene 2: the hook did not keep v2's image id"
result_is E2E-2 1 || fail "scene 2: the host wrapper did not write result 1"
[ "$(hook_runs E2E-2)" = 1 ] || fail "scene 2: the hook ran $(hook_runs E2E-2) times"
[ "$(finalizes E2E-2)" = 1 ] || fail "scene 2: finalized $(finalizes E2E-2) times"
say "scene 2 rollback: v3 failed its health check, rolled back to v2, finalized FAILED (v2 running and healthy)"

# 3. Crash mid-deploy: the platform is killed as soon as `approved` returns,
# and started again; the hook runs once, the deploy is finalized once.
release v4
rev4=$(wt rev-parse HEAD)
build "$image:v4" "$rev4"
docker tag "$image:v4" "$image:staging"
# The container that approves is the one killed, as soon as `approved`
# returns (the hook needs a second or more before it recreates it).
approver=$(platform)
approve E2E-3 "$rev4"
docker kill "$approver" >/dev/null || fail "scene 3: cannot kill the platform"
docker start "$approver" >/dev/null || fail "scene 3: cannot start the platform again"
[ "$(label_of "$approver")" = "$rev2" ] || fail "scene 3: the killed container is not v2"
final=$(wait_final E2E-3)
[ "$final" = finalized_success ] || fail "scene 3: $final, not finalized_success"
[ "$(hook_runs E2E-3)" = 1 ] || fail "scene 3: the hook ran $(hook_runs E2E-3) times"
[ "$(finalizes E2E-3)" = 1 ] || fail "scene 3: finalized $(finalizes E2E-3) times"
[ "$(label_of "$(platform)")" = "$rev4" ] || fail "scene 3: v4 is not running"
say "scene 3 crash: the platform was killed after approving v4 and started again; hook ran once, finalized SUCCESS once"

# 4. Ownership: what the containers wrote under the shared directory is the
# uid's; the host wrapper's own files (hook.log, result-<id>) are the ssh
# user's.
wrong=$(find "$state" \( -name hook.log -o -name 'result-*' \) -prune -o ! -uid "$uid" -print)
[ -z "$wrong" ] || fail "scene 4: files not owned by uid $uid: $wrong"
host_written=$(find "$state" \( -name hook.log -o -name 'result-*' \) ! -uid "$(id -u)" -print)
[ -z "$host_written" ] || fail "scene 4: files named as the host wrapper's but not the ssh user's: $host_written"
say "scene 4 ownership: every file the containers wrote under the shared directory is owned by uid $uid, none by root"

say "all four scenes hold ($(($(date +%s) - started)) s)"
