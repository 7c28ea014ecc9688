//! What the record tests share: the history as JSON, an item's pending
//! intent, a launch held open, signals, and a small tmpfs to fill.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::report::*;
use super::sandbox::*;

const REPO: &str = "orchestrator";

pub fn history(sb: &Sandbox, item: &str) -> Vec<Value> {
    let out = sb.run(&["history", "--repo", REPO, "--work-item", item, "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn pending(sb: &Sandbox, item: &str) -> PathBuf {
    sb.state_root()
        .join(format!(".selfdeploy/pending/{REPO}/{item}.json"))
}

/// A `bash` first on PATH that waits while `gate` exists, then runs the
/// real one: the local transport's launch (and the hook's own `bash`) stalls
/// there, as a slow ssh would.
pub fn slow_bash(sb: &mut Sandbox, gate: &Path) {
    let bin = sb.root().join("slow-bin");
    write_script(
        &bin,
        "bash",
        &format!(
            "#!/bin/sh\nwhile [ -e '{}' ]; do sleep 0.02; done\nexec '{}' \"$@\"\n",
            gate.display(),
            tool("bash")
        ),
    );
    sb.set("PATH", path_with_first_dir(&bin));
}

pub fn spawn_approve(sb: &Sandbox, item: &str) -> Child {
    let mut cmd = sb.event_cmd("approved", item);
    cmd.args(sb.approve_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Waits until the launch has begun: the dispatch ticket is on disk.
pub fn wait_for_ticket(sb: &Sandbox, item: &str) -> String {
    let mut id = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            id = sb.dispatch_id(item);
            id.is_some()
                && sb
                    .item_dir(item)
                    .join(format!("dispatch-{}", id.as_ref().unwrap()))
                    .exists()
        }),
        "the dispatch was never written"
    );
    id.unwrap()
}

/// A small tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let out = Command::new(tool("mount"))
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root): {}",
            text(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the filesystem to the last byte; returns the filler.
    pub fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut file = fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            use std::io::Write as _;
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // A last partial block: what fits.
        for _ in 0..4096 {
            use std::io::Write as _;
            if file.write(&[0]).is_err() {
                break;
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new(tool("umount")).arg("-l").arg(&self.0).status();
    }
}

/// How many entries of the history are `event`.
pub fn count(h: &[Value], event: &str) -> usize {
    h.iter().filter(|e| e["event"] == event).count()
}

/// A FIFO at `path`, where a regular file is expected.
pub fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path_str(path)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}
