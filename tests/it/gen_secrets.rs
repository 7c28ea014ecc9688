//! `selfdeploy gen-secrets` through the binary: printed secrets, and env files
//! created private, refused unchanged, or filled in place keeping every other
//! line, the mode and the group.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use selfdeploy::secrets::read_env_file;

use crate::support::report::*;
use crate::support::sandbox::*;

fn is_token(value: &str) -> bool {
    value.len() == 64 && value.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn printed_key(sb: &Sandbox) -> String {
    let out = sb.run(&["gen-secrets"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let secrets = selfdeploy::secrets::secret_names().len();
    assert_eq!(stdout.lines().count(), secrets, "{stdout}");
    let keys: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("HISTORY_HMAC_KEY="))
        .collect();
    assert_eq!(keys.len(), 1, "{stdout}");
    assert!(is_token(keys[0]), "{stdout}");
    keys[0].to_owned()
}

#[test]
fn prints_a_fresh_key_each_run() {
    let sb = Sandbox::new();
    assert_ne!(printed_key(&sb), printed_key(&sb));
}

#[test]
fn write_creates_a_private_file() {
    let sb = Sandbox::new();
    let dir = sb.root().join("conf");
    fs::create_dir(&dir).unwrap();
    let path = dir.join("secrets.env");
    let out = sb.run(&["gen-secrets", "--write", path.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains('='), "a secret was printed");
    assert_eq!(mode(&path), 0o600);
    let written = fs::read_to_string(&path).unwrap();
    let key = written
        .strip_prefix("HISTORY_HMAC_KEY=")
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{written:?}"));
    assert!(is_token(key), "{written:?}");
    // Nothing else is left in the directory (no temporary file).
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secrets.env"]);
}

#[test]
fn an_existing_file_is_refused_unchanged_then_appended_with_force() {
    let sb = Sandbox::new();
    let path = sb.root().join("prod.env");
    // A comment, a quoted value, and no line break at the end.
    let before =
        "# production\nREPOS_DIR=/srv/r\nGIT_EMAIL_DOMAIN=\"example.test\"\nSTAGING_PORT=8501";
    fs::write(&path, before).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let p = path.to_str().unwrap();

    let out = sb.run(&["gen-secrets", "--write", p]);
    assert_eq!(code(&out), 2, "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("HISTORY_HMAC_KEY") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read(&path).unwrap(), before.as_bytes());
    assert_eq!(mode(&path), 0o640);

    let out = sb.run(&["gen-secrets", "--write", p, "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let after = fs::read_to_string(&path).unwrap();
    let added = after
        .strip_prefix(before)
        .expect("every existing byte kept");
    let key = added
        .strip_prefix("\nHISTORY_HMAC_KEY=")
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{added:?}"));
    assert!(is_token(key), "{added:?}");
    // The file keeps its mode (the group that reads it still does).
    assert_eq!(mode(&path), 0o640);
    let values = read_env_file(&path).unwrap();
    assert_eq!(values["HISTORY_HMAC_KEY"], key);
    assert_eq!(values["GIT_EMAIL_DOMAIN"], "example.test");
}

#[test]
fn an_empty_value_is_missing_and_is_filled_in_place() {
    let sb = Sandbox::new();
    let path = sb.root().join(".env");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    fs::copy(&example, &path).unwrap();
    let before = fs::read(&path).unwrap();
    let p = path.to_str().unwrap();

    let out = sb.run(&["gen-secrets", "--write", p]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert_eq!(fs::read(&path).unwrap(), before);

    let out = sb.run(&["gen-secrets", "--write", p, "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let after = fs::read_to_string(&path).unwrap();
    let before = String::from_utf8(before).unwrap();
    assert_eq!(after.lines().count(), before.lines().count(), "{after}");
    let key = &read_env_file(&path).unwrap()["HISTORY_HMAC_KEY"];
    assert!(is_token(key), "{key:?}");
}

#[test]
fn a_key_with_a_value_is_never_changed() {
    let sb = Sandbox::new();
    let path = sb.root().join("set.env");
    let before = "HISTORY_HMAC_KEY=my-own-key\nREPOS_DIR=/srv/r\n";
    fs::write(&path, before).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        &["gen-secrets", "--write", p][..],
        &["gen-secrets", "--write", p, "--force"][..],
    ] {
        let out = sb.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("nothing changed"),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), before, "{args:?}");
        assert_eq!(mode(&path), 0o644, "{args:?}");
    }
}

#[test]
fn force_needs_write() {
    let sb = Sandbox::new();
    let out = sb.run(&["gen-secrets", "--force"]);
    assert_eq!(code(&out), 2);
    assert!(out.stdout.is_empty());
}
