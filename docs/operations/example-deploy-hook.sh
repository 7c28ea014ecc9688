#!/usr/bin/env bash
# An example deploy hook, and the one `selfdeploy demo` runs. It shows the
# hook's contract without touching docker:
#
#   run as:   cd "$REPO" && <env> bash <hook> --deploy
#   env:      REPO SOURCE_IMAGE TARGET_SERVICE TARGET_PORT TARGET_IMAGE
#             COMPOSE_PROFILE PREV_IMAGE_FILE, and EXPECTED_REVISION when the
#             image freshness check is active
#   exit:     0 healthy; 1 failed and rolled back; 2 rollback failed too
#
# A real hook retags SOURCE_IMAGE as TARGET_IMAGE (build once), restarts
# TARGET_SERVICE with `docker compose --profile "$COMPOSE_PROFILE"`, waits for
# TARGET_PORT to answer, and on failure restores the image in PREV_IMAGE_FILE.
# The wrapper that selfdeploy launches records the exit code in `result`.
set -u

if [ "${1:-}" != "--deploy" ]; then
    echo "usage: $0 --deploy" >&2
    exit 2
fi
for name in REPO SOURCE_IMAGE TARGET_SERVICE TARGET_PORT TARGET_IMAGE PREV_IMAGE_FILE; do
    if [ -z "${!name:-}" ]; then
        echo "deploy: $name is not set; refusing to deploy" >&2
        exit 2
    fi
done

echo "deploy: promoting $SOURCE_IMAGE to $TARGET_IMAGE for service $TARGET_SERVICE (port $TARGET_PORT)"
if [ -n "${EXPECTED_REVISION:-}" ]; then
    echo "deploy: provenance: the image must carry revision $EXPECTED_REVISION"
fi
previous=$(cat "$PREV_IMAGE_FILE" 2>/dev/null || echo none)
echo "$TARGET_IMAGE" > "$PREV_IMAGE_FILE"
echo "deploy: restarting $TARGET_SERVICE (previous image: $previous)"
sleep "${DEMO_HOOK_SECONDS:-1}"

# The demo's stand-in for a health check: a file in the host checkout.
health=$(cat demo-health 2>/dev/null || echo ok)
if [ "$health" = ok ]; then
    echo "deploy: health check passed"
    exit 0
fi
echo "deploy: health check failed; rolling back to $previous"
echo "$previous" > "$PREV_IMAGE_FILE"
exit 1
