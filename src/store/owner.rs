//! One owner: everything under REPOS_DIR is created by the user who owns
//! REPOS_DIR. A command that acts as anybody else (root included: operators
//! reach for sudo because the env file is root's) would leave files that user
//! cannot open, and every later event of the service user would fail with
//! "Permission denied". So acting commands refuse before they write.

use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who owns REPOS_DIR and who runs this command, when they differ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "REPOS_DIR {dir} belongs to {owner} (uid {owner_uid}) but this command runs as {me} (uid {my_uid}): \
     files it created would lock {owner} out; run it as the owner, e.g. `sudo -u {owner} selfdeploy ...` \
     (reading commands work as any user); nothing done"
)]
pub struct NotOwner {
    pub dir: String,
    pub owner: String,
    pub owner_uid: u32,
    pub me: String,
    pub my_uid: u32,
}

/// `Ok` when the effective user owns `repos_dir`; an error for the caller
/// to report when it cannot be read.
pub fn check(repos_dir: &Path) -> std::io::Result<Result<(), NotOwner>> {
    let owner_uid = std::fs::metadata(repos_dir)?.uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let my_uid = unsafe { libc::geteuid() };
    if owner_uid == my_uid {
        return Ok(Ok(()));
    }
    Ok(Err(NotOwner {
        dir: repos_dir.display().to_string(),
        owner: user_name(owner_uid),
        owner_uid,
        me: user_name(my_uid),
        my_uid,
    }))
}

/// The login name of `uid` from the passwd database, else `uid N`.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives the
    // read of `pw_name`, which getpwuid_r points into it.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return format!("uid {uid}");
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string in buf.
    unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_passes_and_root_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path()).unwrap(), Ok(()));
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "uid 4000000000");
        assert!(check(&dir.path().join("missing")).is_err());
    }
}
