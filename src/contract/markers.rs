//! The sentinel files of a work item's state directory and what we write in
//! them. Only the presence of `approve-requested` and `initiated` is a
//! contract; their content is ours. Content written by another engine (the
//! original wrote none) is tolerated: it reads as "unknown". Pure: no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Transport;
use crate::contract::hook_result::Verdict;

/// A sentinel file the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Marker {
    #[serde(rename = "approve-requested")]
    ApproveRequested,
    #[serde(rename = "initiated")]
    Initiated,
    #[serde(rename = "finalized")]
    Finalized,
}

impl Marker {
    pub const ALL: [Marker; 3] = [
        Marker::ApproveRequested,
        Marker::Initiated,
        Marker::Finalized,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Marker::ApproveRequested => "approve-requested",
            Marker::Initiated => "initiated",
            Marker::Finalized => "finalized",
        }
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// Content of `approve-requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveRecord {
    pub requested_by: String,
    pub requested_at: String,
}

/// Content of `initiated`: enough that a later poll needs only the repo and
/// the work item. A record without `dispatch_id` is not ours (the original
/// engine's, or an earlier release's): that item reads the legacy `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiatedRecord {
    /// The dispatch this approval started; names its ticket and its result.
    pub dispatch_id: String,
    pub approved_by: String,
    pub approved_at: String,
    /// The dispatch time to the millisecond: the claim timeout and the result
    /// deadline count from it (`approved_at`, to the second, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<String>,
    /// The kernel's boot id at the dispatch: on the same boot, the boot
    /// clock below measures the dispatch's age (absent in earlier records).
    /// One of the wrong type reads as absent (see [`lenient`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::string"
    )]
    pub boot_id: Option<String>,
    /// `CLOCK_BOOTTIME` at the dispatch, in milliseconds: it never steps
    /// when the wall clock is set (absent in earlier records). One of the
    /// wrong type (negative, a fraction, a string, past u64) reads as absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::millis"
    )]
    pub dispatched_boottime_ms: Option<u64>,
    pub branch: Option<String>,
    pub worktree: String,
    pub revision: Option<String>,
    pub transport: Transport,
    pub argv: Vec<String>,
}

impl InitiatedRecord {
    /// When the dispatch was made, as precisely as it was recorded.
    pub fn dispatch_time(&self) -> &str {
        self.dispatched_at.as_deref().unwrap_or(&self.approved_at)
    }
}

/// The boot clock fields of `initiated`, read leniently: they came after
/// the record, and a value of the wrong type there (a hand edit) must not
/// make the whole record "not our JSON", which would read the item as the
/// original engine's: no ticket, no claim timeout, the host's `result-<id>`
/// never read. Such a value reads as absent: the record is measured as an
/// earlier release's is, by the wall clock only when it is consistent.
mod lenient {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Value::deserialize(d)?.as_str().map(str::to_owned))
    }

    pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Value::deserialize(d)?.as_u64())
    }
}

/// The files of the claim protocol, one set per dispatch: whoever renames
/// the ticket first (the host's claim or the engine's revoke) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketFile {
    /// `dispatch-<id>`: written before the launch; not yet claimed.
    Dispatch,
    /// `claimed-<id>`: the host wrapper renamed it; the hook started.
    Claimed,
    /// `revoked-<id>`: the engine renamed it; this dispatch never runs.
    Revoked,
    /// `result-<id>`: the hook's exit code, written by the host wrapper.
    Result,
    /// `reset-<id>`: a reset found this dispatch claimed with no verdict
    /// recorded, and kept the place its result and log land (the file holds
    /// the dispatch's `initiated` record, when it was the current one).
    Reset,
}

impl TicketFile {
    pub const ALL: [TicketFile; 5] = [
        TicketFile::Dispatch,
        TicketFile::Claimed,
        TicketFile::Revoked,
        TicketFile::Result,
        TicketFile::Reset,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            TicketFile::Dispatch => "dispatch-",
            TicketFile::Claimed => "claimed-",
            TicketFile::Revoked => "revoked-",
            TicketFile::Result => "result-",
            TicketFile::Reset => "reset-",
        }
    }

    /// The file's name for dispatch `id`.
    pub fn name(self, id: &str) -> String {
        format!("{}{id}", self.prefix())
    }

    /// `(kind, id)` when `name` is one of these files with a valid id.
    pub fn parse(name: &str) -> Option<(TicketFile, &str)> {
        TicketFile::ALL.into_iter().find_map(|kind| {
            let id = name.strip_prefix(kind.prefix())?;
            is_dispatch_id(id).then_some((kind, id))
        })
    }
}

/// The dispatch id of `result-<id>.part`, the host wrapper's result before
/// it is renamed into place (left behind when writing it failed): never a
/// result itself.
pub fn partial_result_id(name: &str) -> Option<&str> {
    let whole = name.strip_suffix(crate::contract::remote::PARTIAL_RESULT_SUFFIX)?;
    match TicketFile::parse(whole) {
        Some((TicketFile::Result, id)) => Some(id),
        _ => None,
    }
}

/// Where the current dispatch's ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ticket {
    /// `dispatch-<id>`: launched (or about to be), not claimed yet.
    Sent,
    /// `claimed-<id>`: the host started the hook.
    Claimed,
    /// `revoked-<id>`: this dispatch can never run.
    Revoked,
    /// No file of the three: the engine stopped before writing the ticket,
    /// so nothing was launched.
    Missing,
}

impl Ticket {
    pub fn as_str(self) -> &'static str {
        match self {
            Ticket::Sent => "sent",
            Ticket::Claimed => "claimed",
            Ticket::Revoked => "revoked",
            Ticket::Missing => "missing",
        }
    }
}

/// The dispatch `initiated` names, and how far its ticket got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DispatchState {
    pub id: String,
    pub ticket: Ticket,
}

/// Length of a dispatch id: 16 lower-case hex digits (64 random bits).
pub const DISPATCH_ID_LEN: usize = 16;

/// Whether `id` has the form of a dispatch id.
pub fn is_dispatch_id(id: &str) -> bool {
    id.len() == DISPATCH_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A dispatch id from 8 random bytes.
pub fn dispatch_id_from(bytes: [u8; 8]) -> String {
    hex::encode(bytes)
}

/// Content of `finalized`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedRecord {
    pub deploy_status: Verdict,
    pub hook_exit_code: String,
    pub finalized_at: String,
    pub finalized_by: String,
    /// Whether the deploy log (and any later stamp) reached `origin`; `None`
    /// in records written before pushes were recorded (never retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<bool>,
    /// Why the last commit or push failed, while `pushed` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
}

impl FinalizedRecord {
    /// Whether a poll must retry the push.
    pub fn push_pending(&self) -> bool {
        self.pushed == Some(false)
    }
}

/// A record a marker holds: [`ApproveRecord`], [`InitiatedRecord`],
/// [`FinalizedRecord`] (sealed: no other type is one).
pub trait Record: Serialize + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ApproveRecord {}
    impl Sealed for super::InitiatedRecord {}
    impl Sealed for super::FinalizedRecord {}
}

impl Record for ApproveRecord {}
impl Record for InitiatedRecord {}
impl Record for FinalizedRecord {}

/// Serializes a record as one line of JSON (what the markers hold).
// Only this module's records are encoded ([`Record`]): structs of strings,
// numbers, booleans and options of them, whose derived `Serialize` cannot
// fail (serde_json fails only on a map with keys that are not strings or on
// a failing `Serialize`).
#[allow(clippy::expect_used)]
pub fn encode<T: Record>(record: &T) -> String {
    let mut line = serde_json::to_string(record).expect("records serialize");
    line.push('\n');
    line
}

/// Parses a marker's content; `None` when it is not ours (empty, or written by
/// another engine).
pub fn decode<T: for<'de> Deserialize<'de>>(content: &[u8]) -> Option<T> {
    serde_json::from_slice(content).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_disk_and_in_reports() {
        assert_eq!(Marker::Initiated.to_string(), "initiated");
        assert_eq!(Marker::ApproveRequested.to_string(), "approve-requested");
        let shown: Vec<&str> = [
            Ticket::Sent,
            Ticket::Claimed,
            Ticket::Revoked,
            Ticket::Missing,
        ]
        .into_iter()
        .map(Ticket::as_str)
        .collect();
        assert_eq!(shown, ["sent", "claimed", "revoked", "missing"]);
    }

    #[test]
    fn a_dispatch_id_is_sixteen_lower_case_hex_digits() {
        assert!(is_dispatch_id("0123456789abcdef"));
        for bad in [
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "0123456789abcdeg",
            "",
        ] {
            assert!(!is_dispatch_id(bad), "{bad:?}");
        }
        assert_eq!(dispatch_id_from([0xab; 8]), "abababababababab");
        assert_eq!(
            TicketFile::parse("claimed-0123456789abcdef"),
            Some((TicketFile::Claimed, "0123456789abcdef"))
        );
        assert_eq!(TicketFile::parse("claimed-0123456789ABCDEF"), None);
    }

    /// The wrapper's result before its rename is no file of the protocol
    /// (never a result, stale or not), but is known for what it is.
    #[test]
    fn a_partial_result_is_named_but_never_a_result() {
        use crate::contract::remote::PARTIAL_RESULT_SUFFIX as PART;
        let id = "0123456789abcdef";
        let part = format!("{}{PART}", TicketFile::Result.name(id));
        assert_eq!(TicketFile::parse(&part), None);
        assert_eq!(partial_result_id(&part), Some(id));
        for other in [
            TicketFile::Result.name(id),
            format!("{}{PART}", TicketFile::Claimed.name(id)),
            format!("{}{PART}", TicketFile::Result.name(&id[1..])),
            format!("result{PART}"),
            format!("{part}{PART}"),
        ] {
            assert_eq!(partial_result_id(&other), None, "{other}");
        }
    }
}
