#!/usr/bin/env bash
# Builds the Debian package and checks it: the release binary, the files it
# generates (scripts/package-assets.sh), `cargo deb --no-build` (cargo-deb is
# installed when missing), then the package itself: every path it must ship,
# the modes that matter, the conffile, the control fields, the binary run
# from an extracted copy, the postinst's user and directories made in that
# copy, and `systemd-analyze verify` of the unit; a check whose tool is
# missing here is skipped with a note. Prints the package's path last.
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

# --- what the postinst does, applied to the extracted copy: the user from
# sysusers.d, then its home and ~/.ssh from tmpfiles.d (chown needs root).
if command -v systemd-sysusers >/dev/null 2>&1 &&
    command -v systemd-tmpfiles >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    systemd-sysusers --root="$root" selfdeploy.conf >/dev/null 2>&1 ||
        fail "systemd-sysusers cannot apply /usr/lib/sysusers.d/selfdeploy.conf"
    systemd-tmpfiles --root="$root" --create selfdeploy-watch.conf >/dev/null 2>&1 ||
        fail "systemd-tmpfiles cannot apply /usr/lib/tmpfiles.d/selfdeploy-watch.conf"
    account=$(grep '^selfdeploy:' "$root/etc/passwd" 2>/dev/null || true)
    if [ "$(cut -d: -f6 <<<"$account")" != /var/lib/selfdeploy ]; then
        fail "no user selfdeploy with home /var/lib/selfdeploy after sysusers: ${account:-none}"
    fi
    uid=$(cut -d: -f3 <<<"$account")
    ssh_dir=$(stat -c '%a %u' "$root/var/lib/selfdeploy/.ssh" 2>/dev/null || true)
    if [ "$ssh_dir" != "700 $uid" ]; then
        fail "/var/lib/selfdeploy/.ssh is \"${ssh_dir:-missing}\", not mode 700 owned by selfdeploy ($uid)"
    fi
    gid=$(grep '^selfdeploy:' "$root/etc/group" | cut -d: -f3)
    env_file=$(stat -c '%a %u %g' "$root/etc/selfdeploy/selfdeploy.env" 2>/dev/null || true)
    if [ "$env_file" != "640 0 $gid" ]; then
        fail "/etc/selfdeploy/selfdeploy.env is \"${env_file:-missing}\", not mode 640 root:selfdeploy ($gid)"
    fi
else
    echo "note: systemd-sysusers, systemd-tmpfiles or root is missing here; the user and its home were not made"
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
else
    echo "note: systemd-analyze is not installed here; the unit was not verified"
fi

if [ "$failures" -gt 0 ]; then
    echo "$deb: $failures check(s) failed" >&2
    exit 1
fi
echo "$deb: every check passed"
echo "$deb"
