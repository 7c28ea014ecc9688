#!/usr/bin/env bash
# A throwaway OpenSSH server on 127.0.0.1 for trying selfdeploy's ssh
# transport on one machine: fresh host and client keys, a config that only
# accepts that key for the current user, and an `ssh` wrapper that sends
# every host name to it. Nothing outside DIR is touched.
#
#   scripts/loopback-sshd.sh start DIR   # prints the PATH to use
#   scripts/loopback-sshd.sh stop DIR
#
# See docs/operations/LOOPBACK.md.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 64
}

[ "$#" -eq 2 ] || usage
action=$1
dir=$2

case "$action" in
stop)
    if [ -f "$dir/sshd.pid" ]; then
        kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
        rm -f "$dir/sshd.pid"
        echo "loopback sshd stopped"
    else
        echo "no loopback sshd running from $dir" >&2
    fi
    exit 0
    ;;
start) ;;
*) usage ;;
esac

sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)
ssh_bin=$(command -v ssh || true)
for tool in "$sshd_bin" "$ssh_bin" "$(command -v ssh-keygen || true)"; do
    if [ -z "$tool" ] || [ ! -x "$tool" ]; then
        echo "error: OpenSSH is not installed; apt-get install -y openssh-server" >&2
        exit 1
    fi
done
if [ -f "$dir/sshd.pid" ] && kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; then
    echo "error: a loopback sshd already runs from $dir; stop it first" >&2
    exit 1
fi
mkdir -p "$dir/bin"
dir=$(cd "$dir" && pwd)
user=$(id -un)
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || mkdir -p /run/sshd 2>/dev/null || true

rm -f "$dir/host_key" "$dir/host_key.pub" "$dir/client_key" "$dir/client_key.pub"
ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"

cat >"$dir/bin/ssh" <<WRAPPER
#!/usr/bin/env bash
exec "$ssh_bin" -F "$dir/ssh_config" "\$@"
WRAPPER
chmod 755 "$dir/bin/ssh"

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    port_free "$port" || continue
    cat >"$dir/sshd_config" <<CONFIG
ListenAddress 127.0.0.1
Port $port
HostKey "$dir/host_key"
AuthorizedKeysFile "$dir/authorized_keys"
PidFile "$dir/sshd.pid"
AllowUsers $user
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PrintMotd no
UseDNS no
X11Forwarding no
LogLevel ERROR
CONFIG
    cat >"$dir/ssh_config" <<CONFIG
Host *
    HostName 127.0.0.1
    Port $port
    User $user
    IdentityFile "$dir/client_key"
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile "$dir/known_hosts"
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking accept-new
    BatchMode yes
    LogLevel ERROR
CONFIG
    # Newer servers slow down a source that connects often: not here.
    echo "PerSourcePenalties no" >>"$dir/sshd_config"
    "$sshd_bin" -t -f "$dir/sshd_config" 2>/dev/null || sed -i '$d' "$dir/sshd_config"
    "$sshd_bin" -t -f "$dir/sshd_config"
    "$sshd_bin" -f "$dir/sshd_config" -E "$dir/sshd.log" || continue
    for _ in $(seq 50); do
        if "$dir/bin/ssh" loopback true 2>/dev/null; then
            echo "loopback sshd on 127.0.0.1:$port for $user (log: $dir/sshd.log)"
            echo "export PATH=$dir/bin:\$PATH"
            exit 0
        fi
        sleep 0.1
    done
    if [ -f "$dir/sshd.pid" ]; then
        kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
    fi
done
echo "error: the loopback sshd did not start; see $dir/sshd.log" >&2
exit 1
