#!/usr/bin/env bash
# The reference deploy hook for a compose-managed service. selfdeploy's host
# wrapper runs it as
#
#   cd "$REPO" && REPO=... SOURCE_IMAGE=... TARGET_SERVICE=... TARGET_PORT=... \
#       TARGET_IMAGE=... COMPOSE_PROFILE=... PREV_IMAGE_FILE=... \
#       [EXPECTED_REVISION=...] bash scripts/deploy-hook.sh --deploy
#
# and records its exit code in result-<id> (written to result-<id>.part, then
# renamed), its output in hook.log.
#
#   1. provenance: with EXPECTED_REVISION set, SOURCE_IMAGE's label
#      org.opencontainers.image.revision must equal it (else exit 1, nothing
#      touched);
#   2. the image TARGET_IMAGE names now (none on a first deploy) is written to
#      PREV_IMAGE_FILE (atomically) before anything changes;
#   3. promote without a rebuild: docker tag -- SOURCE_IMAGE TARGET_IMAGE;
#   4. restart: docker compose [--profile COMPOSE_PROFILE] up -d --no-deps --
#      TARGET_SERVICE, in $REPO;
#   5. health: GET http://127.0.0.1:TARGET_PORT/health until a 2xx;
#   6. unhealthy: tag the previous image as TARGET_IMAGE again, restart, check.
#
# Exit codes: 0 healthy on the new image; 1 not deployed, production on the
# previous image (healthy again after a rollback, or never touched); 2 the
# rollback failed or there was nothing to roll back to; 64 a usage error
# (no --deploy, a missing or bad variable, one that begins with '-'),
# nothing touched.
#
# No setting becomes an option: SOURCE_IMAGE, TARGET_SERVICE, TARGET_IMAGE,
# COMPOSE_PROFILE and PREV_IMAGE_FILE must not begin with '-' (exit 64), and
# every docker, compose and file command gets '--' before them.
#
# Optional environment: REPO (default: the repository this script is in),
# COMPOSE_PROFILE (empty: no --profile), EXPECTED_REVISION,
# DEPLOY_HEALTH_PATH (/health), DEPLOY_HEALTH_TIMEOUT_SECS (60, per health
# check), DEPLOY_HEALTH_ATTEMPT_SECS (5, one request at most),
# DEPLOY_HEALTH_INTERVAL_SECS (1, between requests).
#
# Needs bash (its /dev/tcp: no curl), docker with compose (the plugin,
# `docker compose`, else the standalone `docker-compose`), coreutils. What
# docker prints on stderr (warnings) is logged, never read as an id or a
# label.
# Described in docs/operations/HOOK.md; tests/it/deploy_hook.rs runs it
# against scripts/stand-in-docker.
set -euo pipefail

REVISION_LABEL=org.opencontainers.image.revision

usage() {
    cat <<'EOF'
usage: bash scripts/deploy-hook.sh --deploy

Promotes SOURCE_IMAGE to TARGET_IMAGE, restarts TARGET_SERVICE with docker
compose and checks its health on 127.0.0.1:TARGET_PORT, rolling back to the
previous image when it is not healthy. Exit 0 deployed, 1 rolled back (or
nothing changed), 2 rollback failed, 64 usage. The environment it reads is
described at the top of this script.
EOF
}

log() {
    printf '%s deploy: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

# Logs each line of $1 as the output of a command.
log_output() {
    local line
    while IFS= read -r line; do
        log "  | $line"
    done <<<"$1"
}

# Runs a command, logging it and its output (stdout and stderr, each line
# timestamped); returns its exit status.
run() {
    log "run: $*"
    local out status=0
    out=$("$@" 2>&1) || status=$?
    if [ -n "$out" ]; then
        log_output "$out"
    fi
    if [ "$status" -ne 0 ]; then
        log "exit status $status: $*"
    fi
    return "$status"
}

# Runs a command for what it prints on stdout, into OUT; what it says on
# stderr (a real docker warns there: deprecations, plugins) goes to ERR,
# never into OUT. Returns the command's status.
OUT=""
ERR=""
stdout_of() {
    local errfile status=0
    OUT=""
    ERR=""
    if ! errfile=$(mktemp 2>&1); then
        ERR="cannot create a temporary file: $errfile"
        return 1
    fi
    OUT=$("$@" 2>"$errfile") || status=$?
    ERR=$(cat -- "$errfile")
    rm -f -- "$errfile"
    return "$status"
}

# The compose command of this host: docker's plugin (`docker compose`), else
# the standalone `docker-compose`; both accept the same arguments here.
COMPOSE=()
find_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        log "neither the docker compose plugin nor docker-compose is installed"
        log "refusing to deploy; nothing was touched"
        exit 1
    fi
}

usage_error() {
    log "$*; nothing was touched"
    exit 64
}

# whole_secs NAME VALUE: refuses VALUE unless it is a whole number of
# seconds, at least 1.
whole_secs() {
    if ! [[ $2 =~ ^[0-9]{1,6}$ ]] || ((10#$2 < 1)); then
        usage_error "$1 must be a whole number of seconds (at least 1), not '$2'"
    fi
}

# Reads and checks the arguments and the environment; exits 64 on a problem,
# before anything is touched. Ends in $REPO.
settings() {
    if [ "$#" -ne 1 ] || [ "$1" != "--deploy" ]; then
        usage >&2
        exit 64
    fi

    script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
    REPO=${REPO:-$(dirname -- "$script_dir")}
    COMPOSE_PROFILE=${COMPOSE_PROFILE:-}
    EXPECTED_REVISION=${EXPECTED_REVISION:-}
    HEALTH_PATH=${DEPLOY_HEALTH_PATH:-/health}
    HEALTH_TIMEOUT=${DEPLOY_HEALTH_TIMEOUT_SECS:-60}
    ATTEMPT_TIMEOUT=${DEPLOY_HEALTH_ATTEMPT_SECS:-5}
    INTERVAL=${DEPLOY_HEALTH_INTERVAL_SECS:-1}

    for name in SOURCE_IMAGE TARGET_SERVICE TARGET_PORT TARGET_IMAGE PREV_IMAGE_FILE; do
        if [ -z "${!name:-}" ]; then
            usage_error "$name is not set"
        fi
    done
    # Each becomes an argv word of docker, compose, mktemp, mv or rm: one
    # that begins with '-' would be read as an option (--build would rebuild
    # everything). The commands get '--' too; this says what is wrong.
    for name in SOURCE_IMAGE TARGET_SERVICE TARGET_IMAGE COMPOSE_PROFILE PREV_IMAGE_FILE; do
        if [[ ${!name} == -* ]]; then
            usage_error "$name must name an image, a service, a profile or a file, not an option: it begins with '-' ('${!name}')"
        fi
    done
    if ! [[ $TARGET_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$TARGET_PORT < 1 || 10#$TARGET_PORT > 65535)); then
        usage_error "TARGET_PORT must be a port number (1-65535), not '$TARGET_PORT'"
    fi
    TARGET_PORT=$((10#$TARGET_PORT))
    if ! [[ $HEALTH_PATH =~ ^/[^[:space:][:cntrl:]]*$ ]]; then
        usage_error "DEPLOY_HEALTH_PATH must start with / and have no spaces, not '$HEALTH_PATH'"
    fi
    whole_secs DEPLOY_HEALTH_TIMEOUT_SECS "$HEALTH_TIMEOUT"
    whole_secs DEPLOY_HEALTH_ATTEMPT_SECS "$ATTEMPT_TIMEOUT"
    HEALTH_TIMEOUT=$((10#$HEALTH_TIMEOUT))
    ATTEMPT_TIMEOUT=$((10#$ATTEMPT_TIMEOUT))
    if ! [[ $INTERVAL =~ ^[0-9]{1,4}(\.[0-9]{1,3})?$ ]]; then
        usage_error "DEPLOY_HEALTH_INTERVAL_SECS must be a number of seconds (e.g. 1 or 0.5), not '$INTERVAL'"
    fi
    if ! cd -- "$REPO" 2>/dev/null; then
        usage_error "REPO is not a directory I can enter: $REPO"
    fi
}

# Milliseconds since the epoch (bash 5's EPOCHREALTIME, else whole seconds).
now_ms() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local micros=${EPOCHREALTIME//[!0-9]/}
        echo $((10#$micros / 1000))
    else
        echo $(($(date +%s) * 1000))
    fi
}

# One GET of the health URL within $1 seconds (a decimal); prints the status
# code, or what went wrong. A server that accepts and never answers costs one
# attempt.
http_status() {
    local line status=0
    # shellcheck disable=SC2016 # expanded by the inner bash
    line=$(timeout --kill-after=1 "$1" bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 3
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$2" "$1" >&3
        IFS= read -r line <&3 || exit 4
        printf "%s\n" "$line"
    ' health "$TARGET_PORT" "$HEALTH_PATH" 2>/dev/null) || status=$?
    case $status in
        0) ;;
        3) echo "connection refused"; return ;;
        4) echo "closed without an answer"; return ;;
        124 | 137) echo "no answer within ${1}s"; return ;;
        *) echo "request failed ($status)"; return ;;
    esac
    line=${line%$'\r'}
    if [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo "not HTTP"
    fi
}

# Polls the health URL until a 2xx, for at most HEALTH_TIMEOUT seconds.
healthy() {
    local url="http://127.0.0.1:$TARGET_PORT$HEALTH_PATH"
    local start deadline now left attempt status last="" attempts=0
    start=$(now_ms)
    deadline=$((start + HEALTH_TIMEOUT * 1000))
    log "health: waiting up to ${HEALTH_TIMEOUT}s for a 2xx from $url"
    while :; do
        now=$(now_ms)
        left=$((deadline - now))
        if [ "$left" -le 0 ]; then
            break
        fi
        attempt=$((ATTEMPT_TIMEOUT * 1000))
        if [ "$attempt" -gt "$left" ]; then
            attempt=$left
        fi
        status=$(http_status "$((attempt / 1000)).$(printf '%03d' $((attempt % 1000)))")
        attempts=$((attempts + 1))
        if [[ $status =~ ^2[0-9][0-9]$ ]]; then
            log "health: $url answered $status after $attempts attempt(s), $((($(now_ms) - start) / 1000))s"
            return 0
        fi
        if [ "$status" != "$last" ]; then
            log "health: $url: $status"
            last=$status
        fi
        if [ $(($(now_ms) + ${INTERVAL%.*} * 1000)) -ge "$deadline" ]; then
            break
        fi
        sleep "$INTERVAL"
    done
    log "health: no 2xx from $url within ${HEALTH_TIMEOUT}s ($attempts attempt(s), last: ${last:-none})"
    return 1
}

compose_up() {
    local profile=()
    if [ -n "$COMPOSE_PROFILE" ]; then
        profile=(--profile "$COMPOSE_PROFILE")
    fi
    run "${COMPOSE[@]}" ${profile[@]+"${profile[@]}"} up -d --no-deps -- "$TARGET_SERVICE"
}

# Reads the id of the image a reference names into IMAGE_ID; fails (logging
# why) when it cannot be read, with ABSENT=1 when docker says there is no
# such image.
IMAGE_ID=""
ABSENT=0
image_id() {
    IMAGE_ID=""
    ABSENT=0
    if stdout_of docker image inspect --format '{{.Id}}' -- "$1"; then
        warnings "docker image inspect $1"
        if [[ $OUT =~ ^[^[:space:]]+$ ]]; then
            IMAGE_ID=$OUT
            return 0
        fi
        log "docker image inspect $1 gave no single id:"
        log_output "$OUT"
        return 1
    fi
    if [[ ${ERR,,} == *"no such image"* ]]; then
        ABSENT=1
    else
        log "docker image inspect $1 failed:"
        log_output "$OUT"
        log_output "$ERR"
    fi
    return 1
}

# Logs what the last stdout_of command said on stderr, if anything.
warnings() {
    if [ -n "$ERR" ]; then
        log "$1 said on stderr:"
        log_output "$ERR"
    fi
}

roll_back() {
    local previous=$1
    if [ -z "$previous" ]; then
        log "rollback impossible: there is no previous image to roll back to (the first deploy of $TARGET_IMAGE); $TARGET_SERVICE stays on $TARGET_IMAGE, not healthy"
        exit 2
    fi
    log "rollback: restoring $TARGET_IMAGE to the previous image $previous"
    if ! run docker tag -- "$previous" "$TARGET_IMAGE"; then
        log "rollback failed: cannot tag $previous as $TARGET_IMAGE"
        exit 2
    fi
    if ! compose_up; then
        log "rollback failed: $TARGET_SERVICE did not start on $previous"
        exit 2
    fi
    if ! healthy; then
        log "rollback failed: $TARGET_SERVICE is not healthy on $previous either"
        exit 2
    fi
    log "rolled back: $TARGET_SERVICE is healthy again on the previous image $previous"
    exit 1
}

# The deploy itself: provenance, the previous image, promote, restart,
# health, and the rollback; exits with the hook's code.
deploy() {
    local revision source_id previous="" tmp
    log "deploying $SOURCE_IMAGE as $TARGET_IMAGE: service $TARGET_SERVICE, port $TARGET_PORT, profile ${COMPOSE_PROFILE:-(none)}, in $REPO"

    # 1. Provenance, before anything is touched.
    if [ -n "$EXPECTED_REVISION" ]; then
        if ! stdout_of docker image inspect --format "{{ index .Config.Labels \"$REVISION_LABEL\" }}" -- "$SOURCE_IMAGE"; then
            log "provenance: cannot read the revision of $SOURCE_IMAGE:"
            log_output "$OUT"
            log_output "$ERR"
            log "refusing to deploy; nothing was touched"
            exit 1
        fi
        warnings "docker image inspect $SOURCE_IMAGE"
        revision=$OUT
        if [ "$revision" != "$EXPECTED_REVISION" ]; then
            log "provenance: $SOURCE_IMAGE carries revision '${revision}', expected '$EXPECTED_REVISION': a stale image"
            log "refusing to deploy; nothing was touched"
            exit 1
        fi
        log "provenance: $SOURCE_IMAGE carries the expected revision $EXPECTED_REVISION"
    else
        log "provenance: no EXPECTED_REVISION given; the image's revision is not checked"
    fi
    if ! image_id "$SOURCE_IMAGE"; then
        if [ "$ABSENT" = 1 ]; then
            log "$SOURCE_IMAGE does not exist"
        fi
        log "refusing to deploy; nothing was touched"
        exit 1
    fi
    source_id=$IMAGE_ID

    find_compose

    # 2. The previous image, recorded before anything changes.
    if image_id "$TARGET_IMAGE"; then
        previous=$IMAGE_ID
        log "previous image: $TARGET_IMAGE is $previous"
        if ! tmp=$(mktemp -- "$PREV_IMAGE_FILE.XXXXXX" 2>&1); then
            log "cannot write $PREV_IMAGE_FILE:"
            log_output "$tmp"
            log "refusing to deploy; nothing was touched"
            exit 1
        fi
        if ! { printf '%s\n' "$previous" >"$tmp" && mv -f -- "$tmp" "$PREV_IMAGE_FILE"; }; then
            rm -f -- "$tmp"
            log "cannot write $PREV_IMAGE_FILE; refusing to deploy; nothing was touched"
            exit 1
        fi
        log "previous image recorded in $PREV_IMAGE_FILE"
    elif [ "$ABSENT" = 1 ]; then
        log "previous image: none ($TARGET_IMAGE does not exist yet: a first deploy, nothing to roll back to)"
        if [ -e "$PREV_IMAGE_FILE" ]; then
            rm -f -- "$PREV_IMAGE_FILE"
            log "removed the stale $PREV_IMAGE_FILE"
        fi
    else
        log "refusing to deploy; nothing was touched"
        exit 1
    fi

    # 3. Promote without a rebuild.
    log "promoting $SOURCE_IMAGE ($source_id) to $TARGET_IMAGE"
    if ! run docker tag -- "$SOURCE_IMAGE" "$TARGET_IMAGE"; then
        log "cannot tag $SOURCE_IMAGE as $TARGET_IMAGE; production was not restarted"
        exit 1
    fi

    # 4. Restart, 5. health.
    if compose_up; then
        if healthy; then
            log "deployed: $TARGET_SERVICE is healthy on $source_id"
            exit 0
        fi
        log "$TARGET_SERVICE is not healthy on $source_id"
    else
        log "$TARGET_SERVICE did not start on $source_id"
    fi

    # 6. Roll back.
    roll_back "$previous"
}

# Every path ends in an exit, and all of the script is read before any of it
# runs: the checkout it lives in may be updated while a deploy runs.
main() {
    settings "$@"
    deploy
}

main "$@"
