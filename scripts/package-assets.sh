#!/usr/bin/env bash
# The files a package ships that the binary generates: the manual pages
# (gzipped, as Debian installs them) and the completion scripts for bash, zsh
# and fish. cargo-deb cannot run code, so scripts/build-deb.sh runs this
# between `cargo build --release` and `cargo deb --no-build`; the paths it
# writes are the ones [package.metadata.deb] lists in Cargo.toml.
#
#   scripts/package-assets.sh [BINARY [OUT_DIR]]
#
# BINARY defaults to the release binary, OUT_DIR to release/assets in
# Cargo's target directory. OUT_DIR is emptied first, so a page of a
# subcommand that no longer exists is not shipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -gt 2 ]; then
    echo "usage: $0 [BINARY [OUT_DIR]]" >&2
    exit 64
fi

target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

if [ "$#" -ge 1 ]; then
    bin=$1
else
    bin="$(target_dir)/release/selfdeploy"
fi
if [ "$#" -ge 2 ]; then
    out=$2
else
    out="$(target_dir)/release/assets"
fi
if [ ! -x "$bin" ]; then
    echo "$0: $bin is not an executable; build it first (cargo build --release --locked)" >&2
    exit 1
fi

rm -rf "$out"
mkdir -p "$out/man" "$out/completions"

"$bin" man --out-dir "$out/man"
# -n: no name or time stamp in the archive, so the same page gives the same
# bytes.
gzip -9 -n "$out"/man/*.1

"$bin" completions bash >"$out/completions/selfdeploy.bash"
"$bin" completions zsh >"$out/completions/_selfdeploy"
"$bin" completions fish >"$out/completions/selfdeploy.fish"

pages=("$out"/man/*.1.gz)
echo "wrote ${#pages[@]} manual pages and 3 completion scripts under $out"
