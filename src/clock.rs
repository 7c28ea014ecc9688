//! How long ago a dispatch was made, measured so that no step of the wall
//! clock decides a verdict. Pure: the readings come in (the engine reads
//! them through `crate::probe::Probe`, a replay simulates them).
//!
//! At the dispatch, `initiated` records the wall time (`dispatched_at`) and
//! the boot clock: the kernel's boot id and `CLOCK_BOOTTIME`, which never
//! steps when the wall clock is set and counts time spent suspended. On the
//! same boot, the age is the difference of two boot clock readings, whatever
//! the wall clock did in between. Across a reboot, on another machine, or
//! for a record without the boot clock (an earlier release's), the wall
//! clock is the only measure; it is used only when it is consistent: the
//! dispatch time is not in the future, and agrees with the time the kernel
//! gave the `initiated` file when it was written. Otherwise the age is
//! inconsistent, and nothing is decided by it (no revoke, no deadline).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::contract::markers::InitiatedRecord;

/// How far two clock readings of one instant may disagree before the
/// dispatch time counts as wrong. The wall time and the boot clock are read
/// together, and `initiated` is written milliseconds later (an fsync on a
/// slow disk, under a second); file times come from the kernel's coarse
/// clock (a few milliseconds); NTP slews the wall and the boot clock alike,
/// so only a step separates them. A claim timeout or a deadline is never
/// decided more than this early or late by a clock that looks consistent.
pub const TOLERANCE: Duration = Duration::from_secs(5);

/// A reading of the boot clock: which boot, and how long since it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootClock {
    /// `/proc/sys/kernel/random/boot_id`: new at every boot of the kernel.
    pub boot_id: String,
    /// `CLOCK_BOOTTIME`: time since the boot, suspend included.
    pub since_boot: Duration,
}

/// How long ago the current dispatch was made, as far as it can be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchAge {
    /// Measured: by the boot clock on the same boot, else by a consistent
    /// wall clock.
    Known(Duration),
    /// No dispatch time is recorded (an item the original engine started).
    Unknown,
    /// The recorded time cannot be trusted (why): nothing is decided by it
    /// until it is consistent.
    Inconsistent(String),
}

/// The age, and what the clocks disagree about while the boot clock decides
/// (the wall clock was stepped, or was wrong at the dispatch): shown, never
/// acted upon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub age: DispatchAge,
    pub stepped: Option<String>,
}

impl Measured {
    /// What `status` and `watch` show about this dispatch's clock, if
    /// anything.
    pub fn problem(&self) -> Option<String> {
        match &self.age {
            DispatchAge::Inconsistent(why) => Some(format!(
                "clock: {why}; no claim timeout or result deadline is applied to this dispatch until its time is consistent (fix the clock, or correct dispatched_at in initiated)"
            )),
            _ => self.stepped.as_ref().map(|why| {
                format!(
                    "clock: {why}; the boot clock measures the dispatch's age, so its timeouts are unaffected; check the clock's synchronisation (NTP)"
                )
            }),
        }
    }
}

/// The signed difference `a - b` in whole seconds, for messages.
fn signed_secs(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => i128::from(d.as_secs()),
        Err(e) => -i128::from(e.duration().as_secs()),
    }
}

/// Whether `a` and `b` are more than [`TOLERANCE`] apart.
fn apart(a: SystemTime, b: SystemTime) -> bool {
    let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
    d > TOLERANCE
}

fn stamp(t: SystemTime) -> String {
    rfc3339_millis(t)
}

/// The first second RFC 3339 cannot write (the year 10000).
const PAST_YEAR_9999: u64 = 253_402_300_800;

/// `t` as RFC 3339 (to the second, or to the millisecond), or `None` when
/// no timestamp can hold it: before 1970, or after the year 9999.
fn in_range(t: SystemTime) -> Option<SystemTime> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    (since.as_secs() < PAST_YEAR_9999).then_some(t)
}

/// A time no RFC 3339 timestamp can hold, said as the seconds between it
/// and the epoch: a clock set before 1970 or past the year 9999, or a file
/// time given by `touch -d`, is shown (and does not parse back as a time),
/// never a panic.
fn out_of_range(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => format!("{} s after 1970-01-01T00:00:00Z", after.as_secs()),
        Err(e) => format!("{} s before 1970-01-01T00:00:00Z", e.duration().as_secs()),
    }
}

/// `t` as RFC 3339 to the second (what records and the history hold), for
/// any time: see [`out_of_range`].
pub fn rfc3339_seconds(t: SystemTime) -> String {
    in_range(t).map_or_else(
        || out_of_range(t),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// `t` as RFC 3339 to the millisecond, for any time: see [`out_of_range`].
pub fn rfc3339_millis(t: SystemTime) -> String {
    in_range(t).map_or_else(
        || out_of_range(t),
        |t| humantime::format_rfc3339_millis(t).to_string(),
    )
}

/// The age of the dispatch `record` names at the instant `wall_now` /
/// `boot_now` (read together), given the time the kernel gave its
/// `initiated` file (`file_time`, when known).
pub fn measure(
    record: Option<&InitiatedRecord>,
    file_time: Option<SystemTime>,
    wall_now: SystemTime,
    boot_now: Option<&BootClock>,
) -> Measured {
    let known = |age| Measured {
        age: DispatchAge::Known(age),
        stepped: None,
    };
    let inconsistent = |why: String| Measured {
        age: DispatchAge::Inconsistent(why),
        stepped: None,
    };
    let Some(record) = record else {
        return Measured {
            age: DispatchAge::Unknown,
            stepped: None,
        };
    };
    let text = record.dispatch_time();
    let at = humantime::parse_rfc3339(text).ok();
    // The file's time against the recorded one: both from the wall clock
    // of the moment, one as the engine read it, one as the kernel set it.
    let file_disagrees = match (at, file_time) {
        (Some(at), Some(file)) if apart(at, file) => Some(format!(
            "the dispatch time {text} in initiated differs by {} s from the time the kernel gave the file ({}): the clock was wrong when the dispatch was recorded, or the record was edited",
            signed_secs(at, file),
            stamp(file)
        )),
        _ => None,
    };

    // The same boot: the boot clock decides.
    if let (Some(then_id), Some(then_ms), Some(now)) =
        (&record.boot_id, record.dispatched_boottime_ms, boot_now)
        && *then_id == now.boot_id
    {
        let then = Duration::from_millis(then_ms);
        let Some(age) = now.since_boot.checked_sub(then) else {
            return inconsistent(format!(
                "initiated records the dispatch at {} s of the boot clock, later than now ({} s) on the same boot: the record is damaged",
                then.as_secs(),
                now.since_boot.as_secs()
            ));
        };
        let wall_disagrees = match at {
            None => Some(format!(
                "the dispatch time {text:?} in initiated does not parse"
            )),
            Some(at) => {
                let wall_then = wall_now.checked_sub(age);
                wall_then.filter(|t| apart(at, *t)).map(|t| {
                    format!(
                        "the wall clock disagrees with the boot clock by {} s: the dispatch was recorded at {text} by the wall clock, {} s ago by the boot clock (the wall clock was stepped since, or was wrong then)",
                        signed_secs(t, at),
                        age.as_secs()
                    )
                })
            }
        };
        let stepped: Vec<String> = wall_disagrees.into_iter().chain(file_disagrees).collect();
        return Measured {
            age: DispatchAge::Known(age),
            stepped: (!stepped.is_empty()).then(|| stepped.join("; ")),
        };
    }

    // Another boot, another machine, or no boot clock: the wall clock, when
    // it is consistent.
    let Some(at) = at else {
        return inconsistent(format!(
            "the dispatch time {text:?} in initiated does not parse"
        ));
    };
    if let Ok(ahead) = at.duration_since(wall_now)
        && ahead > TOLERANCE
    {
        return inconsistent(format!(
            "the dispatch time {text} is {} s in the future (the clock reads {}): the clock was ahead at the dispatch, or is behind now",
            ahead.as_secs(),
            stamp(wall_now)
        ));
    }
    if let Some(why) = file_disagrees {
        return inconsistent(why);
    }
    known(wall_now.duration_since(at).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;
    use std::time::UNIX_EPOCH;

    const T0: u64 = 1_800_000_000;

    fn at(secs: i64) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(T0 + secs as u64)
        } else {
            UNIX_EPOCH + Duration::from_secs(T0 - secs.unsigned_abs())
        }
    }

    fn record(dispatched: i64, boot: Option<(&str, u64)>) -> InitiatedRecord {
        InitiatedRecord {
            dispatch_id: "0000000000000001".into(),
            approved_by: "alice".into(),
            approved_at: humantime::format_rfc3339_seconds(at(dispatched)).to_string(),
            dispatched_at: Some(stamp(at(dispatched))),
            boot_id: boot.map(|(id, _)| id.to_owned()),
            dispatched_boottime_ms: boot.map(|(_, secs)| secs * 1000),
            branch: None,
            worktree: "/wt".into(),
            revision: None,
            transport: Transport::by_name("ssh").unwrap(),
            argv: Vec::new(),
        }
    }

    fn boot(id: &str, secs: u64) -> BootClock {
        BootClock {
            boot_id: id.into(),
            since_boot: Duration::from_secs(secs),
        }
    }

    #[test]
    fn no_record_is_unknown() {
        assert_eq!(
            measure(None, None, at(0), Some(&boot("a", 10))).age,
            DispatchAge::Unknown
        );
    }

    #[test]
    fn on_the_same_boot_the_boot_clock_decides_whatever_the_wall_clock_did() {
        // Dispatched an hour behind (the clock stepped forward since): the
        // wall says 3600 s, the boot clock 1 s, and 1 s it is.
        let r = record(-3600, Some(("a", 100)));
        let m = measure(Some(&r), Some(at(-1)), at(0), Some(&boot("a", 101)));
        assert_eq!(m.age, DispatchAge::Known(Duration::from_secs(1)));
        let shown = m.problem().unwrap();
        assert!(
            shown.contains("disagrees with the boot clock by 3599 s"),
            "{shown}"
        );
        assert!(
            shown.contains("differs by -3599 s from the time the kernel"),
            "{shown}"
        );
        assert!(shown.contains("timeouts are unaffected"), "{shown}");
        // Dispatched an hour ahead (in the future now): the same.
        let r = record(3600, Some(("a", 100)));
        let m = measure(Some(&r), None, at(0), Some(&boot("a", 130)));
        assert_eq!(m.age, DispatchAge::Known(Duration::from_secs(30)));
        assert!(m.stepped.unwrap().contains("by -3630 s"));
        // Consistent clocks: nothing to show.
        let r = record(-30, Some(("a", 100)));
        let m = measure(Some(&r), Some(at(-30)), at(0), Some(&boot("a", 130)));
        assert_eq!(
            m,
            Measured {
                age: DispatchAge::Known(Duration::from_secs(30)),
                stepped: None
            }
        );
        // Within the tolerance: nothing either.
        let m = measure(Some(&r), Some(at(-25)), at(2), Some(&boot("a", 130)));
        assert_eq!(m.stepped, None);
    }

    #[test]
    fn a_boot_clock_later_than_now_on_the_same_boot_is_inconsistent() {
        let r = record(-30, Some(("a", 100)));
        let m = measure(Some(&r), None, at(0), Some(&boot("a", 99)));
        assert!(
            matches!(m.age, DispatchAge::Inconsistent(ref why) if why.contains("damaged")),
            "{m:?}"
        );
    }

    #[test]
    fn across_boots_the_wall_clock_counts_when_it_is_consistent() {
        let r = record(-700, Some(("a", 100)));
        for now_boot in [Some(boot("b", 10)), None] {
            let m = measure(Some(&r), Some(at(-700)), at(0), now_boot.as_ref());
            assert_eq!(m.age, DispatchAge::Known(Duration::from_secs(700)));
        }
        // A record of an earlier release: no boot clock, the wall clock.
        let r = record(-700, None);
        let m = measure(Some(&r), None, at(0), Some(&boot("a", 10)));
        assert_eq!(m.age, DispatchAge::Known(Duration::from_secs(700)));
        // A few seconds ahead is a clock's jitter: age zero.
        let r = record(3, None);
        let m = measure(Some(&r), None, at(0), None);
        assert_eq!(m.age, DispatchAge::Known(Duration::ZERO));
    }

    #[test]
    fn a_dispatch_time_in_the_future_is_inconsistent_across_boots() {
        let r = record(3600, Some(("a", 100)));
        let m = measure(Some(&r), None, at(0), Some(&boot("b", 10)));
        let DispatchAge::Inconsistent(why) = &m.age else {
            panic!("{m:?}")
        };
        assert!(why.contains("is 3600 s in the future"), "{why}");
        assert!(
            m.problem()
                .unwrap()
                .contains("no claim timeout or result deadline")
        );
        // Just past the tolerance.
        let r = record(6, None);
        assert!(matches!(
            measure(Some(&r), None, at(0), None).age,
            DispatchAge::Inconsistent(_)
        ));
    }

    #[test]
    fn a_dispatch_time_the_file_contradicts_is_inconsistent_across_boots() {
        // Recorded an hour behind: the wall age would be an hour, the file
        // says a second.
        let r = record(-3600, None);
        let m = measure(Some(&r), Some(at(-1)), at(0), None);
        let DispatchAge::Inconsistent(why) = &m.age else {
            panic!("{m:?}")
        };
        assert!(
            why.contains("differs by -3599 s from the time the kernel gave the file"),
            "{why}"
        );
        // Within the tolerance it is the wall age.
        let m = measure(Some(&r), Some(at(-3596)), at(0), None);
        assert_eq!(m.age, DispatchAge::Known(Duration::from_secs(3600)));
    }

    #[test]
    fn a_dispatch_time_that_does_not_parse_is_inconsistent() {
        let mut r = record(0, None);
        r.dispatched_at = Some("yesterday".into());
        assert!(matches!(
            measure(Some(&r), None, at(0), None).age,
            DispatchAge::Inconsistent(ref why) if why.contains("\"yesterday\" in initiated does not parse")
        ));
        // On the same boot, the boot clock still measures; the bad time is shown.
        let mut r = record(0, Some(("a", 100)));
        r.dispatched_at = Some("yesterday".into());
        let m = measure(Some(&r), None, at(0), Some(&boot("a", 101)));
        assert_eq!(m.age, DispatchAge::Known(Duration::from_secs(1)));
        assert!(m.stepped.is_some());
    }

    #[test]
    fn a_time_no_timestamp_holds_is_said_and_never_a_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(
            rfc3339_seconds(before),
            "86400 s before 1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339_millis(before),
            "86400 s before 1970-01-01T00:00:00Z"
        );
        let after = UNIX_EPOCH + Duration::from_secs(PAST_YEAR_9999);
        assert_eq!(
            rfc3339_seconds(after),
            "253402300800 s after 1970-01-01T00:00:00Z"
        );
        assert!(humantime::parse_rfc3339(&rfc3339_millis(after)).is_err());
        let last = UNIX_EPOCH + Duration::from_millis(PAST_YEAR_9999 * 1000 - 1);
        assert_eq!(rfc3339_millis(last), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // A file time before 1970 against a dispatch across boots: the
        // age is inconsistent, and the message says the file's time.
        let r = record(0, None);
        let m = measure(Some(&r), Some(before), at(0), None);
        let DispatchAge::Inconsistent(why) = &m.age else {
            panic!("{m:?}")
        };
        assert!(
            why.contains("(86400 s before 1970-01-01T00:00:00Z)"),
            "{why}"
        );
    }
}
