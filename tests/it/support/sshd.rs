//! A real OpenSSH server on loopback, for end-to-end tests.
//!
//! [`Sshd::start`] creates a throwaway [`tempfile::TempDir`] holding a host
//! key, a client key, an `authorized_keys` file, an `sshd_config` and an ssh
//! client config, starts `sshd -D -e -f <config>` listening on
//! `127.0.0.1:<free port>`, and waits until a key-authenticated login works.
//!
//! The client side is a wrapper script, `<tmp>/bin/ssh`, which runs
//! `/usr/bin/ssh -F <client config> "$@"`. The client config matches every
//! host (`Host *`) and sends it to the loopback server, so a program that
//! looks `ssh` up on `PATH` reaches the test server whatever host alias it is
//! given, once [`Sshd::path_with_wrapper`] is its `PATH`:
//!
//! ```ignore
//! let sshd = Sshd::start();
//! let out = std::process::Command::new("ssh")
//!     .env("PATH", sshd.path_with_wrapper())
//!     .args(["-o", "StrictHostKeyChecking=no", "any-host", "echo hi"])
//!     .output()
//!     .unwrap();
//! ```
//!
//! Everything is passed through `-F` because OpenSSH finds `~/.ssh` through
//! the password database, not `$HOME`, so a fake home would not work.
//!
//! The login user is the current user (`id -un`) and the remote command runs
//! in that user's login shell from `/etc/passwd`. The server is killed when the
//! [`Sshd`] is dropped; processes that a session detached (e.g. with `setsid`)
//! are not, they keep running like on a real host.
//!
//! If OpenSSH is not installed the harness panics: it never skips.

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::sandbox::path_with_first_dir;

const SSHD: &str = "/usr/sbin/sshd";
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
/// Privilege-separation directory that sshd refuses to start without.
const PRIVSEP_DIR: &str = "/run/sshd";
/// How long to wait for a started sshd to accept a login.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for sshd's pid file before probing anyway.
const PID_FILE_GRACE: Duration = Duration::from_secs(3);
/// How many ports to try when sshd cannot bind the one it was given
/// (another process may grab the port between `free_port` and sshd's bind).
const BIND_ATTEMPTS: usize = 5;
const INSTALL_HINT: &str = "install OpenSSH, e.g. `apt-get install -y openssh-server` \
     (it pulls in openssh-client)";

/// A running OpenSSH server on `127.0.0.1`, plus an `ssh` wrapper that reaches
/// it. Killed on drop.
pub struct Sshd {
    child: Child,
    port: u16,
    user: String,
    wrapper_dir: PathBuf,
    /// Declared last so that it is removed after the server is killed.
    _dir: TempDir,
}

impl Sshd {
    /// Starts the server and waits until a login through the wrapper
    /// succeeds.
    ///
    /// # Panics
    ///
    /// If OpenSSH is missing, or the server cannot be started or reached
    /// within a few seconds; the message includes the server's log.
    pub fn start() -> Sshd {
        let sshd = find_tool(SSHD, "sshd");
        let ssh = find_tool(SSH, "ssh");
        let keygen = find_tool(SSH_KEYGEN, "ssh-keygen");
        let user = current_user();

        if !Path::new(PRIVSEP_DIR).is_dir() {
            // Best effort: as non-root this may fail, and sshd will say so.
            let _ = fs::create_dir_all(PRIVSEP_DIR);
            let _ = fs::set_permissions(PRIVSEP_DIR, fs::Permissions::from_mode(0o755));
        }

        let dir = tempfile::Builder::new()
            .prefix("sshd-harness-")
            .tempdir()
            .unwrap_or_else(|e| panic!("sshd harness: cannot create a temporary directory: {e}"));
        let root = dir.path().to_path_buf();

        let host_key = root.join("host_ed25519");
        let client_key = root.join("client_ed25519");
        keygen_ed25519(&keygen, &host_key);
        keygen_ed25519(&keygen, &client_key);
        let authorized_keys = root.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized_keys)
            .unwrap_or_else(|e| panic!("sshd harness: cannot write authorized_keys: {e}"));

        let wrapper_dir = root.join("bin");
        let client_config = root.join("ssh_config");
        let wrapper = write_wrapper(&wrapper_dir, &ssh, &client_config);

        let server_config = root.join("sshd_config");
        let log = root.join("sshd.log");
        let pid_file = root.join("sshd.pid");
        // Newer OpenSSH (9.8+) penalises source addresses after failed or
        // aborted connections, which could make a loopback test server refuse
        // later connections. Older versions reject the keyword: drop it then.
        let mut disable_penalties = true;

        let mut last_log = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let mut server = ServerConfig {
                port,
                host_key: &host_key,
                authorized_keys: &authorized_keys,
                pid_file: &pid_file,
                disable_penalties,
            };
            write_file(&server_config, &server.render());
            let mut check = check_config(&sshd, &server_config);
            if disable_penalties
                && check
                    .as_ref()
                    .is_err_and(|e| e.contains("PerSourcePenalties"))
            {
                disable_penalties = false;
                server.disable_penalties = false;
                write_file(&server_config, &server.render());
                check = check_config(&sshd, &server_config);
            }
            if let Err(stderr) = check {
                panic!(
                    "sshd harness: `{} -t` rejects the generated config:\n{stderr}\n\
                     --- {} ---\n{}",
                    sshd.display(),
                    server_config.display(),
                    fs::read_to_string(&server_config).unwrap_or_default(),
                );
            }

            write_file(
                &client_config,
                &client_config_text(port, &user, &client_key, &root.join("known_hosts")),
            );

            let _ = fs::remove_file(&pid_file);
            let log_file = fs::File::create(&log)
                .unwrap_or_else(|e| panic!("sshd harness: cannot create {}: {e}", log.display()));
            // sshd re-executes itself, so it must be started by absolute path.
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&server_config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("sshd harness: cannot run {}: {e}", sshd.display()));

            match wait_ready(&mut child, &pid_file, &wrapper, port, &user, &log) {
                Ready::Yes => {
                    return Sshd {
                        child,
                        port,
                        user,
                        wrapper_dir,
                        _dir: dir,
                    };
                }
                Ready::PortTaken => last_log = read_log(&log),
            }
        }
        panic!(
            "sshd harness: sshd could not bind a loopback port in {BIND_ATTEMPTS} attempts; \
             last log:\n{last_log}"
        );
    }

    /// The directory holding the `ssh` wrapper; prepend it to `PATH`.
    pub fn wrapper_dir(&self) -> &Path {
        &self.wrapper_dir
    }

    /// [`Self::wrapper_dir`], `:`, then the current `PATH`: a `PATH` under
    /// which `ssh` reaches this server.
    pub fn path_with_wrapper(&self) -> OsString {
        path_with_first_dir(&self.wrapper_dir)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the current user, as `id -un` prints it).
    pub fn user(&self) -> String {
        self.user.clone()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `ssh` wrapper like [`Sshd`]'s, with no server: its client config sends
/// every host to a loopback port that was free a moment ago (bound to port 0
/// and released), so every connection is refused at once. For the
/// unreachable-host paths.
pub struct ClosedPort {
    port: u16,
    wrapper_dir: PathBuf,
    _dir: TempDir,
}

impl ClosedPort {
    /// # Panics
    ///
    /// If OpenSSH's client is missing.
    pub fn new() -> ClosedPort {
        let ssh = find_tool(SSH, "ssh");
        let dir = tempfile::Builder::new()
            .prefix("ssh-closed-port-")
            .tempdir()
            .unwrap_or_else(|e| panic!("ssh harness: cannot create a temporary directory: {e}"));
        let root = dir.path();
        let port = free_port();
        let client_config = root.join("ssh_config");
        write_file(
            &client_config,
            &client_config_text(
                port,
                &current_user(),
                &root.join("no_key"),
                &root.join("known_hosts"),
            ),
        );
        let wrapper_dir = root.join("bin");
        write_wrapper(&wrapper_dir, &ssh, &client_config);
        ClosedPort {
            port,
            wrapper_dir,
            _dir: dir,
        }
    }

    /// The port nothing listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the `ssh` wrapper.
    pub fn wrapper_dir(&self) -> &Path {
        &self.wrapper_dir
    }

    /// [`Self::wrapper_dir`], `:`, then the current `PATH`.
    pub fn path_with_wrapper(&self) -> OsString {
        path_with_first_dir(&self.wrapper_dir)
    }
}

/// Waits until sshd has bound its port (it writes the pid file right after),
/// then polls until a login through the wrapper succeeds. Returns
/// [`Ready::PortTaken`] if sshd exits because the port was taken; panics
/// (after killing sshd) on any other failure.
fn wait_ready(
    child: &mut Child,
    pid_file: &Path,
    wrapper: &Path,
    port: u16,
    user: &str,
    log: &Path,
) -> Ready {
    let start = Instant::now();
    let deadline = start + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap_or(None) {
            let log = read_log(log);
            if log.contains("Address already in use") || log.contains("Cannot bind") {
                return Ready::PortTaken;
            }
            panic!("sshd harness: sshd exited ({status}) before accepting a login; log:\n{log}");
        }
        // Probing before sshd listens could reach whoever holds the port and
        // hang on its banner; the pid file is only a hint, so not forever.
        if !pid_file.exists() && start.elapsed() < PID_FILE_GRACE {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        let probe = run(
            Command::new(wrapper)
                .args(["-o", "ConnectTimeout=2", "readiness-probe", "true"])
                .stdin(Stdio::null()),
            "the ssh wrapper",
        );
        if probe.status.success() {
            return Ready::Yes;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sshd harness: no successful login to 127.0.0.1:{port} as {user} within \
                 {READY_TIMEOUT:?}.\nlast ssh stderr:\n{}\nsshd log:\n{}",
                String::from_utf8_lossy(&probe.stderr),
                read_log(log),
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

enum Ready {
    Yes,
    PortTaken,
}

struct ServerConfig<'a> {
    port: u16,
    host_key: &'a Path,
    authorized_keys: &'a Path,
    pid_file: &'a Path,
    disable_penalties: bool,
}

impl ServerConfig<'_> {
    fn render(&self) -> String {
        let mut text = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PidFile {pid_file}\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             X11Forwarding no\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             LogLevel ERROR\n",
            port = self.port,
            host_key = config_path(self.host_key),
            authorized_keys = config_path(self.authorized_keys),
            pid_file = config_path(self.pid_file),
        );
        if self.disable_penalties {
            text.push_str("PerSourcePenalties no\n");
        }
        text
    }
}

fn client_config_text(port: u16, user: &str, identity: &Path, known_hosts: &Path) -> String {
    format!(
        "Host *\n\
         \tHostName 127.0.0.1\n\
         \tPort {port}\n\
         \tUser {user}\n\
         \tIdentityFile {identity}\n\
         \tIdentitiesOnly yes\n\
         \tIdentityAgent none\n\
         \tUserKnownHostsFile {known_hosts}\n\
         \tGlobalKnownHostsFile /dev/null\n\
         \tStrictHostKeyChecking no\n\
         \tUpdateHostKeys no\n\
         \tBatchMode yes\n\
         \tControlMaster no\n\
         \tControlPath none\n\
         \tLogLevel ERROR\n",
        identity = config_path(identity),
        known_hosts = config_path(known_hosts),
    )
}

/// `preferred` if it exists, else `name` looked up on `PATH`; panics with the
/// install hint when neither exists. Always returns an absolute path.
fn find_tool(preferred: &str, name: &str) -> PathBuf {
    let preferred = Path::new(preferred);
    if preferred.is_file() {
        return preferred.to_path_buf();
    }
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.is_file());
    match found {
        Some(path) => path.canonicalize().unwrap_or(path),
        None => panic!(
            "sshd harness: `{name}` not found (neither {} nor on PATH); {INSTALL_HINT}",
            preferred.display()
        ),
    }
}

/// Writes `<dir>/ssh`: `/usr/bin/ssh -F <client config> "$@"`. Returns its path.
fn write_wrapper(dir: &Path, ssh: &Path, client_config: &Path) -> PathBuf {
    fs::create_dir(dir)
        .unwrap_or_else(|e| panic!("sshd harness: cannot create the wrapper dir: {e}"));
    let wrapper = dir.join("ssh");
    write_file(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec {} -F {} \"$@\"\n",
            sh_quote(ssh),
            sh_quote(client_config)
        ),
    );
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("sshd harness: cannot chmod the ssh wrapper: {e}"));
    wrapper
}

/// Runs `sshd -t` on a config; the error is sshd's stderr.
fn check_config(sshd: &Path, config: &Path) -> Result<(), String> {
    let out = run(
        Command::new(sshd).arg("-t").arg("-f").arg(config),
        "sshd -t",
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn read_log(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

fn current_user() -> String {
    let out = run(Command::new("id").arg("-un"), "id -un");
    let user = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !user.is_empty(),
        "sshd harness: `id -un` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    user
}

fn keygen_ed25519(keygen: &Path, path: &Path) {
    let out = run(
        Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sshd-harness", "-f"])
            .arg(path)
            .stdin(Stdio::null()),
        "ssh-keygen",
    );
    assert!(
        out.status.success(),
        "sshd harness: ssh-keygen failed for {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or_else(
            |e| panic!("sshd harness: cannot bind 127.0.0.1:0: {e}"),
            |a| a.port(),
        )
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("sshd harness: cannot run {what}: {e}"))
}

fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents)
        .unwrap_or_else(|e| panic!("sshd harness: cannot write {}: {e}", path.display()));
}

/// A path for an ssh/sshd config file, double-quoted (configs split on
/// whitespace). Temporary paths never contain `"`.
fn config_path(path: &Path) -> String {
    let text = path
        .to_str()
        .expect("sshd harness: non-UTF-8 temporary path");
    assert!(
        !text.contains('"'),
        "sshd harness: path contains '\"': {text}"
    );
    format!("\"{text}\"")
}

/// A path single-quoted for `/bin/sh`.
fn sh_quote(path: &Path) -> String {
    let text = path.to_str().expect("sshd harness: non-UTF-8 path");
    format!("'{}'", text.replace('\'', r"'\''"))
}
