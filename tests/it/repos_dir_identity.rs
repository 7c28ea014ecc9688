//! Issue 18.3: an unmounted share is an error, never an empty list. REPOS_DIR
//! holds the identity `selfdeploy init` writes; every command that reads or
//! writes the state requires it, so an empty directory where the share should
//! be mounted is never taken for "nothing in flight".

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::record::*;
use crate::support::report::*;
use crate::support::sandbox::*;

const IDENTITY: &str = ".selfdeploy/identity.json";

/// Every command that reads or writes the state, as a stage engine, the
/// watch or an operator runs it.
fn state_commands(item: &str) -> Vec<Vec<String>> {
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let item_args = ["--repo", REPO, "--work-item", item];
    let mut commands = vec![
        owned(&["status"]),
        owned(&["status", "--all", "--json"]),
        owned(&["watch", "--once"]),
        owned(&["snapshot", "--repo", REPO, "--work-item", item]),
    ];
    for head in [&["status"][..], &["history"], &["explain", "poll"]] {
        let mut c = owned(head);
        c.extend(owned(&item_args));
        commands.push(c);
    }
    for event in ["poll", "request-approve", "reset"] {
        for dry in [false, true] {
            let mut c = owned(&["event", event]);
            c.extend(owned(&item_args));
            if dry {
                c.push("--dry-run".into());
            }
            commands.push(c);
        }
    }
    commands
}

/// Asserts that every state command fails with one line that names
/// REPOS_DIR and what to do, prints nothing on stdout, and writes nothing.
fn assert_every_command_refuses(sb: &Sandbox, item: &str, why: &str, extra: &[&[&str]]) {
    let before = sb.disk();
    let mut commands = state_commands(item);
    commands.extend(
        extra
            .iter()
            .map(|c| c.iter().map(|a| a.to_string()).collect()),
    );
    for args in commands {
        let mut cmd = sb.cmd();
        cmd.args(&args);
        let out = run_bounded(cmd, Duration::from_secs(30));
        let err = text(&out.stderr);
        let what = format!("{} ({why})", args.join(" "));
        assert_eq!(code(&out), 1, "{what}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains("REPOS_DIR"), "{what}: {err}");
        assert!(
            err.contains("selfdeploy init") || err.contains("move it away"),
            "{what}: {err}"
        );
        assert!(out.stdout.is_empty(), "{what}: {out:?}");
    }
    assert_eq!(sb.disk(), before, "a refused command wrote ({why})");
}

/// The scene: a deploy in flight, then the share is unmounted (an
/// empty directory where it was: here a fresh tmpfs mounted over it). Every
/// reader and writer refuses, doctor fails and writes nothing, and a second
/// approval never runs a second hook. Mounted again, the deploy finishes.
#[test]
fn an_unmounted_share_is_an_error_for_every_command_and_nothing_runs_twice() {
    let sb = Sandbox::new();
    let item = "MOUNT-1";
    fs::write(sb.host_repo().join("hold"), "").unwrap();
    sb.approve_item(item);
    assert!(
        wait_for(Duration::from_secs(10), || sb.hook_runs() == 1),
        "the hook never started"
    );

    let unmounted = Tmpfs::mount(&sb.state_root(), "1m");
    assert_eq!(fs::read_dir(sb.state_root()).unwrap().count(), 0);
    let approve: Vec<String> = ["event", "approved", "--repo", REPO, "--work-item", item]
        .iter()
        .map(|s| s.to_string())
        .chain(sb.approve_args())
        .collect();
    let approve: Vec<&str> = approve.iter().map(String::as_str).collect();
    assert_every_command_refuses(&sb, item, "unmounted", &[&approve]);

    let out = sb.run(&["doctor", "--json"]);
    assert_eq!(code(&out), 1, "{out:?}");
    let checks: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {checks:?}"))
            .clone()
    };
    assert_eq!(check("REPOS_DIR identity")["status"], "fail");
    assert!(
        check("REPOS_DIR identity")["fix"]
            .as_str()
            .unwrap()
            .contains("mount the shared directory"),
        "{checks:?}"
    );
    assert_eq!(check("REPOS_DIR writable")["status"], "skip");
    assert_eq!(
        fs::read_dir(sb.state_root()).unwrap().count(),
        0,
        "doctor wrote into the unmounted directory"
    );

    drop(unmounted);
    assert!(sb.state_root().join(IDENTITY).is_file());
    fs::remove_file(sb.host_repo().join("hold")).unwrap();
    let last = sb.poll_until_final(item, &[]);
    assert_eq!(last["to"], "finalized_success", "{last}");
    assert_eq!(sb.hook_runs(), 1, "a second hook ran");
}

/// `init` writes the identity once, says so, and never replaces it; it
/// refuses a REPOS_DIR that does not exist (it never creates it: that would
/// paper over a missing mount).
#[test]
fn init_writes_once_and_never_creates_or_replaces() {
    let mut sb = Sandbox::new();
    let first = fs::read(sb.state_root().join(IDENTITY)).unwrap();
    let out = sb.run(&["init", "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(fs::read(sb.state_root().join(IDENTITY)).unwrap(), first);
    let recorded: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(again["id"], recorded["id"]);

    let fresh = sb.root().join("fresh");
    fs::create_dir(&fresh).unwrap();
    sb.set("REPOS_DIR", fresh.clone().into_os_string());
    sb.set("HOST_REPOS_DIR", fresh.clone().into_os_string());
    let out = sb.run(&["init"]);
    assert_eq!(code(&out), 0, "{out:?}");
    let said = text(&out.stdout);
    assert!(said.contains("initialized: identity "), "{said}");
    assert!(
        text(&out.stderr).contains("is not a mount point"),
        "{out:?}"
    );
    let made: serde_json::Value =
        serde_json::from_slice(&fs::read(fresh.join(IDENTITY)).unwrap()).unwrap();
    assert_ne!(made["id"], recorded["id"], "two shares, two identities");
    let out = sb.run(&["status", "--all"]);
    assert_eq!(code(&out), 0, "{out:?}");

    let missing = sb.root().join("not-mounted");
    sb.set("REPOS_DIR", missing.clone().into_os_string());
    let out = sb.run(&["init"]);
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(text(&out.stderr).contains("REPOS_DIR"), "{out:?}");
    assert!(!missing.exists(), "init created REPOS_DIR");
}

/// A damaged identity (empty, not JSON, a symlink, a FIFO, a directory, a
/// huge file) is an error for every command and for `init`, which never
/// replaces it: a damaged share must not be papered over. A FIFO never
/// hangs a command.
#[test]
fn a_damaged_identity_is_an_error_and_init_never_replaces_it() {
    let sb = Sandbox::new();
    let item = "DAMAGE-1";
    sb.request_approve(item);
    let file = sb.state_root().join(IDENTITY);
    let outside = sb.root().join("elsewhere.json");
    fs::copy(&file, &outside).unwrap();
    type Plant = Box<dyn Fn(&Path)>;
    let plant: [(&str, Plant); 6] = [
        ("empty", Box::new(|p| fs::write(p, "").unwrap())),
        (
            "not JSON",
            Box::new(|p| fs::write(p, "\u{0}\u{ff}binary").unwrap()),
        ),
        (
            "huge",
            Box::new(|p| fs::write(p, vec![b' '; 1 << 20]).unwrap()),
        ),
        (
            "symlink",
            Box::new(|p| std::os::unix::fs::symlink("../../elsewhere.json", p).unwrap()),
        ),
        ("fifo", Box::new(mkfifo)),
        ("directory", Box::new(|p| fs::create_dir(p).unwrap())),
    ];
    for (why, plant) in plant {
        let _ = fs::remove_file(&file);
        let _ = fs::remove_dir(&file);
        plant(&file);
        assert_every_command_refuses(&sb, item, why, &[&["init"]]);
    }
    let _ = fs::remove_dir(&file);
    fs::copy(&outside, &file).unwrap();
    let out = sb.run(&["status", "--repo", REPO, "--work-item", item, "--json"]);
    assert_eq!(code(&out), 0, "{out:?}");
}

/// `init` writes under REPOS_DIR, so like every acting command it runs only
/// as REPOS_DIR's owner: as anybody else it writes nothing.
#[test]
fn init_as_another_user_than_the_owner_writes_nothing() {
    let mut sb = Sandbox::new();
    let fresh = sb.root().join("fresh");
    fs::create_dir(&fresh).unwrap();
    sb.set("REPOS_DIR", fresh.clone().into_os_string());
    // SAFETY: chown of a path we created, to a uid nobody uses.
    let c_path = std::ffi::CString::new(path_str(&fresh)).unwrap();
    assert_eq!(
        unsafe { libc::chown(c_path.as_ptr(), 4_000_001, 4_000_001) },
        0
    );
    let out = sb.run(&["init"]);
    assert_eq!(code(&out), 1, "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("belongs to uid 4000001"), "{err}");
    assert_eq!(fs::read_dir(&fresh).unwrap().count(), 0);
}

/// The share is unmounted under a running watch: the empty directory left
/// is a failed rescan (said once, counted), not a quiet "nothing to do"; and
/// the watch carries on once it is back.
#[test]
fn a_share_unmounted_under_a_running_watch_is_a_failed_rescan() {
    let sb = Sandbox::new();
    sb.request_approve("MOUNT-2");
    let mut cmd = sb.cmd();
    cmd.args(["watch"])
        .env("SELF_DEPLOY_WATCH_RESCAN_SECS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let unmounted = Tmpfs::mount(&sb.state_root(), "1m");
    std::thread::sleep(Duration::from_millis(3500));
    drop(unmounted);
    std::thread::sleep(Duration::from_millis(2500));
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let log = text(&out.stderr);
    assert_eq!(code(&out), 0, "{log}");
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rescan failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("has no selfdeploy identity"), "{log}");
    assert!(log.contains("rescans work again"), "{log}");
    assert_eq!(
        fs::read_dir(sb.state_root()).unwrap().count(),
        2,
        "the watch wrote into the unmounted directory, or lost the share"
    );
}
