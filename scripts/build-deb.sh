#!/usr/bin/env bash
# Builds the Debian package and checks it: the release binary, the files it
# generates (scripts/package-assets.sh), `cargo deb --no-build` (cargo-deb is
# installed when missing), then the package itself: every path it must ship,
# the modes that matter, the conffile, the control fields, the Debian
# changelog, the binary run from an extracted copy, the package installed
# and purged by dpkg in a scratch root (its postinst with systemd's tools,
# then with them failing), `systemd-analyze verify` of the unit and its
# `systemd-analyze security` exposure (4.0 at most), and lintian (no error,
# no warning); a check whose tool is missing here is skipped with a note.
# Prints the package's path last.
#
#   scripts/build-deb.sh
#
# Exit 0 with a package that passed every check; 1 when a check fails (each
# failure is one line on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -ne 0 ]; then
    echo "usage: $0" >&2
    exit 64
fi

target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$target_dir" ] || [ -z "$version" ]; then
    echo "$0: cannot read the target directory or the version from Cargo" >&2
    exit 1
fi
bin="$target_dir/release/selfdeploy"
assets="$target_dir/release/assets"

cargo build --release --locked
bash scripts/package-assets.sh "$bin" "$assets"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb is missing; installing it"
    cargo install cargo-deb --locked
fi
# cargo deb prints the package's path as its last line on stdout.
deb=$(cargo deb --no-build --locked | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "$0: cargo deb made no package (it printed: $deb)" >&2
    exit 1
fi
echo "checking $deb"

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# --- what the package holds: `dpkg-deb -c` lines are
# "MODE OWNER SIZE DATE TIME ./PATH".
listing=$(dpkg-deb -c "$deb")
mode_of() {
    awk -v p="./$1" '$NF == p { print $1 }' <<<"$listing"
}

expected=(
    usr/bin/selfdeploy
    etc/selfdeploy/selfdeploy.env
    usr/share/selfdeploy/deploy-hook.sh
    usr/lib/systemd/system/selfdeploy-watch.service
    usr/lib/sysusers.d/selfdeploy.conf
    usr/lib/tmpfiles.d/selfdeploy-watch.conf
    usr/share/man/man1/selfdeploy.1.gz
    usr/share/man/man1/selfdeploy-watch.1.gz
    usr/share/bash-completion/completions/selfdeploy
    usr/share/zsh/vendor-completions/_selfdeploy
    usr/share/fish/vendor_completions.d/selfdeploy.fish
    usr/share/doc/selfdeploy/README.md
    usr/share/doc/selfdeploy/copyright
    usr/share/doc/selfdeploy/changelog.Debian.gz
    usr/share/lintian/overrides/selfdeploy
)
# Every page the binary wrote, every operations guide.
for page in "$assets"/man/*.1.gz; do
    expected+=("usr/share/man/man1/$(basename "$page")")
done
for guide in docs/operations/*.md; do
    expected+=("usr/share/doc/selfdeploy/operations/$(basename "$guide")")
done
for path in "${expected[@]}"; do
    if [ -z "$(mode_of "$path")" ]; then
        fail "the package lacks /$path"
    fi
done

expect_mode() {
    local got
    got=$(mode_of "$1")
    if [ -n "$got" ] && [ "$got" != "$2" ]; then
        fail "/$1 has mode $got, not $2"
    fi
}
# The env file holds the secrets: written by root, read by the selfdeploy
# group (the postinst's tmpfiles.d sets the group).
expect_mode etc/selfdeploy/selfdeploy.env -rw-r-----
expect_mode usr/bin/selfdeploy -rwxr-xr-x
expect_mode usr/share/selfdeploy/deploy-hook.sh -rwxr-xr-x
expect_mode usr/lib/systemd/system/selfdeploy-watch.service -rw-r--r--

# --- control: the env file is a conffile (an upgrade keeps the operator's
# edits), and the tools selfdeploy runs are dependencies.
conffiles=$(dpkg-deb -I "$deb" conffiles 2>/dev/null || true)
if ! grep -qx /etc/selfdeploy/selfdeploy.env <<<"$conffiles"; then
    fail "/etc/selfdeploy/selfdeploy.env is not a conffile (conffiles: ${conffiles:-none})"
fi
depends=$(dpkg-deb -f "$deb" Depends)
for dep in bash git openssh-client; do
    if ! tr ',|' '\n' <<<"$depends" | sed 's/^ *//; s/ .*//' | grep -qx "$dep"; then
        fail "Depends lacks $dep: $depends"
    fi
done
package_version=$(dpkg-deb -f "$deb" Version)
if [ "${package_version%-*}" != "$version" ]; then
    fail "the package's version is $package_version, the crate's $version"
fi

# The Debian changelog's newest entry is this version.
changelog_version=$(sed -n '1s/^selfdeploy (\([^)]*\)).*/\1/p' packaging/debian/changelog)
if [ "$changelog_version" != "$package_version" ]; then
    fail "packaging/debian/changelog's newest entry is ${changelog_version:-none}, the package is $package_version"
fi

# --- the files themselves, from an extracted copy.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
printed=$("$root/usr/bin/selfdeploy" --version 2>&1 || true)
if [ "$printed" != "selfdeploy $version" ]; then
    fail "the packaged binary's --version printed \"$printed\", not \"selfdeploy $version\""
fi
if ! cmp -s .env.example "$root/etc/selfdeploy/selfdeploy.env"; then
    fail "/etc/selfdeploy/selfdeploy.env differs from .env.example"
fi
if ! cmp -s scripts/deploy-hook.sh "$root/usr/share/selfdeploy/deploy-hook.sh"; then
    fail "/usr/share/selfdeploy/deploy-hook.sh differs from scripts/deploy-hook.sh"
fi
unit="$root/usr/lib/systemd/system/selfdeploy-watch.service"
for line in "ExecStart=/usr/bin/selfdeploy watch" \
    "EnvironmentFile=/etc/selfdeploy/selfdeploy.env" "User=selfdeploy"; do
    if ! grep -qxF "$line" "$unit" 2>/dev/null; then
        fail "the packaged unit lacks the line $line"
    fi
done
if ! gzip -t "$root"/usr/share/man/man1/*.1.gz; then
    fail "a manual page is not a valid gzip file"
fi
# The postinst creates the user (sysusers.d), then its home (tmpfiles.d):
# each configuration it names must be one the package ships.
postinst=$(dpkg-deb -I "$deb" postinst 2>/dev/null || true)
if ! grep -q 'systemd-sysusers.* selfdeploy.conf$' <<<"$postinst"; then
    fail "postinst does not create the selfdeploy user (systemd-sysusers selfdeploy.conf)"
fi
named=0
while read -r tool conf; do
    named=$((named + 1))
    case $tool in
    systemd-sysusers) dir=usr/lib/sysusers.d ;;
    *) dir=usr/lib/tmpfiles.d ;;
    esac
    if [ ! -f "$root/$dir/$conf" ]; then
        fail "postinst runs $tool $conf, but the package has no /$dir/$conf"
    fi
done < <(awk '/systemd-(sysusers|tmpfiles)/ {
    tool = ($0 ~ /systemd-sysusers/) ? "systemd-sysusers" : "systemd-tmpfiles"
    for (i = 1; i <= NF; i++) if ($i ~ /[.]conf$/) print tool, $i
}' <<<"$postinst")
if [ "$named" -lt 2 ]; then
    fail "postinst names $named of the 2 configurations (sysusers.d, tmpfiles.d)"
fi

# --- the package installed and purged by dpkg itself, in a scratch root
# (`dpkg --root`; the maintainer scripts run outside it with DPKG_ROOT set):
# once with systemd-sysusers and systemd-tmpfiles, once with both failing,
# as in a container or a chroot without them (useradd and install then).
# Each time: the user with its home, ~/.ssh 0700, the env file
# root:selfdeploy 0640; the purge removes the home. A home that holds a
# state directory is kept.
scratch_root() {
    local dir
    dir=$(mktemp -d "$root/dpkg-root.XXXXXX")
    mkdir -p "$dir/var/lib/dpkg/info" "$dir/var/lib/dpkg/updates" "$dir/etc"
    : >"$dir/var/lib/dpkg/status"
    printf 'root:x:0:0:root:/root:/bin/bash\n' >"$dir/etc/passwd"
    printf 'root:x:0:\n' >"$dir/etc/group"
    printf 'root:*:19000:0:99999:7:::\n' >"$dir/etc/shadow"
    printf 'root:*::\n' >"$dir/etc/gshadow"
    echo "$dir"
}
dpkg_in() {
    local dir=$1 path=$2
    shift 2
    PATH="$path" dpkg --root="$dir" --force-script-chrootless --force-depends \
        --force-not-root "$@" >"$dir.log" 2>&1 ||
        { cat "$dir.log" >&2; return 1; }
}
check_installed() {
    local dir=$1 how=$2 account uid gid
    account=$(grep '^selfdeploy:' "$dir/etc/passwd" || true)
    if [ "$(cut -d: -f6 <<<"$account")" != /var/lib/selfdeploy ]; then
        fail "$how: no user selfdeploy with home /var/lib/selfdeploy: ${account:-none}"
        return
    fi
    uid=$(cut -d: -f3 <<<"$account")
    gid=$(grep '^selfdeploy:' "$dir/etc/group" | cut -d: -f3)
    local got
    got=$(stat -c '%a %u' "$dir/var/lib/selfdeploy" 2>/dev/null || true)
    [ "$got" = "750 $uid" ] || fail "$how: /var/lib/selfdeploy is \"${got:-missing}\", not 750 owned by selfdeploy ($uid)"
    got=$(stat -c '%a %u' "$dir/var/lib/selfdeploy/.ssh" 2>/dev/null || true)
    [ "$got" = "700 $uid" ] || fail "$how: /var/lib/selfdeploy/.ssh is \"${got:-missing}\", not 700 owned by selfdeploy ($uid)"
    got=$(stat -c '%a %u %g' "$dir/etc/selfdeploy/selfdeploy.env" 2>/dev/null || true)
    [ "$got" = "640 0 $gid" ] || fail "$how: /etc/selfdeploy/selfdeploy.env is \"${got:-missing}\", not 640 root:selfdeploy ($gid)"
}
if [ "$(id -u)" -eq 0 ] && command -v useradd >/dev/null 2>&1; then
    stubs="$root/failing-tools"
    mkdir -p "$stubs"
    for tool in systemd-sysusers systemd-tmpfiles; do
        printf '#!/bin/sh\necho "%s: cannot run here" >&2\nexit 1\n' "$tool" >"$stubs/$tool"
        chmod 755 "$stubs/$tool"
    done
    for how in "with systemd's tools" "without them"; do
        path=$PATH
        [ "$how" = "without them" ] && path="$stubs:$PATH"
        if [ "$how" != "without them" ] && ! command -v systemd-sysusers >/dev/null 2>&1; then
            echo "note: systemd-sysusers is not installed here; the install with it was not tried"
            continue
        fi
        dir=$(scratch_root)
        if ! dpkg_in "$dir" "$path" -i "$deb"; then
            fail "dpkg -i $how failed (log above)"
            continue
        fi
        check_installed "$dir" "installed $how"
        if [ "$how" = "without them" ] && ! grep -q 'making the user with useradd' "$dir.log"; then
            fail "installed $how: the postinst did not say it fell back to useradd"
        fi
        if ! dpkg_in "$dir" "$path" --purge selfdeploy; then
            fail "dpkg --purge $how failed (log above)"
        elif [ -e "$dir/var/lib/selfdeploy" ]; then
            fail "purged $how: /var/lib/selfdeploy is still there"
        fi
    done
    # A REPOS_DIR under the home (it has an identity) survives the purge.
    dir=$(scratch_root)
    if dpkg_in "$dir" "$PATH" -i "$deb"; then
        mkdir -p "$dir/var/lib/selfdeploy/repos/.selfdeploy"
        echo '{}' >"$dir/var/lib/selfdeploy/repos/.selfdeploy/identity.json"
        dpkg_in "$dir" "$PATH" --purge selfdeploy || fail "dpkg --purge with a REPOS_DIR in the home failed"
        [ -f "$dir/var/lib/selfdeploy/repos/.selfdeploy/identity.json" ] ||
            fail "the purge removed a REPOS_DIR under /var/lib/selfdeploy"
    else
        fail "dpkg -i (for the purge with a REPOS_DIR) failed (log above)"
    fi
else
    echo "note: root or useradd is missing here; the package was not installed in a scratch root"
fi

# --- the unit, as systemd reads it, in a scratch root that holds this
# machine's units (the targets it names) and the package over them: its
# ExecStart must exist there, its Documentation= man page must be one the
# package ships. A machine without systemd-analyze cannot check it: say so.
if command -v systemd-analyze >/dev/null 2>&1; then
    sysroot="$root/sysroot"
    mkdir -p "$sysroot/usr/lib/systemd/system"
    if [ -d /usr/lib/systemd/system ]; then
        cp -a /usr/lib/systemd/system/. "$sysroot/usr/lib/systemd/system/"
    fi
    dpkg-deb -x "$deb" "$sysroot"
    man_check=--man=yes
    if ! command -v man >/dev/null 2>&1; then
        man_check=--man=no
        echo "note: man is not installed here; the unit's Documentation= was not checked"
    fi
    if ! verify=$(MANPATH="$sysroot/usr/share/man" systemd-analyze verify \
        "$man_check" --root="$sysroot" \
        /usr/lib/systemd/system/selfdeploy-watch.service 2>&1); then
        fail "systemd-analyze verify: $verify"
    elif [ -n "$verify" ]; then
        fail "systemd-analyze verify warned: $verify"
    fi
    # The sandbox: the exposure systemd-analyze gives the unit (0 to 10,
    # lower is safer) must be 4.0 or less (REPLICATION.md has the figure).
    security=$(systemd-analyze security --offline=true --root="$sysroot" \
        selfdeploy-watch.service 2>&1 || true)
    exposure=$(sed -n 's/.*Overall exposure level for selfdeploy-watch.service: \([0-9.]*\).*/\1/p' <<<"$security")
    if [ -z "$exposure" ]; then
        fail "systemd-analyze security gave no exposure: $security"
    elif ! awk -v e="$exposure" 'BEGIN { exit !(e <= 4.0) }'; then
        fail "systemd-analyze security: the unit's exposure is $exposure, more than 4.0"
    else
        echo "systemd-analyze security: exposure $exposure"
    fi
else
    echo "note: systemd-analyze is not installed here; the unit was not verified nor scored"
fi

# --- lintian: no error and no warning (the overrides the package ships say
# why each exception is one).
if command -v lintian >/dev/null 2>&1; then
    # (Its note about running as root is not a finding.)
    if ! report=$(lintian --fail-on error,warning "$deb" 2>&1); then
        fail "lintian: $(grep -v 'running with root privileges' <<<"$report")"
    fi
else
    echo "note: lintian is not installed here; the package was not linted"
fi

if [ "$failures" -gt 0 ]; then
    echo "$deb: $failures check(s) failed" >&2
    exit 1
fi
echo "$deb: every check passed"
echo "$deb"
