//! `vaultctl schedule --systemd`: the policy's windows as `OnCalendar=` lines, a drop-in for
//! the packaged `vaultctl-push@.timer`, so pushes start when the vault's link comes up.

use std::fmt::Write as _;

use vault_core::policy::{Policy, Window, DAY_NAMES};

/// The drop-in: `[Timer]`, an empty `OnCalendar=` (it replaces the unit's daily default), then
/// one line per window. Weekly windows recur; a one-shot window that has not ended yet is
/// given once, at its start.
pub fn timer_drop_in(policy: &Policy, verified: bool, now: vault_core::units::Timestamp) -> String {
    let mut out = String::new();
    let trust = if verified { "verified against the trust root" } else { "NOT VERIFIED: give --root to check its signatures" };
    let _ = writeln!(out, "# vaultctl-push@.timer drop-in: the windows of vault {}'s policy v{} ({trust}),", policy.vault_id, policy.version);
    let _ = writeln!(out, "# which expires at {}. Written by `vaultctl schedule --systemd`; write it again with each new policy.", policy.expires);
    out.push_str("[Timer]\nOnCalendar=\n");
    for window in &policy.windows {
        match window {
            Window::Weekly { days, start_secs, .. } => {
                let names: Vec<String> = days.indices().map(|d| capitalised(DAY_NAMES[d])).collect();
                let _ = writeln!(out, "OnCalendar={} *-*-* {:02}:{:02}:{:02} UTC", names.join(","), start_secs / 3600, start_secs / 60 % 60, start_secs % 60);
            }
            Window::Once { from, until } if *until > now => {
                let text = from.to_string();
                // RFC 3339 `2026-12-05T22:00:00Z` -> systemd's `2026-12-05 22:00:00 UTC`.
                let _ = writeln!(out, "OnCalendar={} UTC", text.trim_end_matches('Z').replacen('T', " ", 1));
            }
            Window::Once { .. } => {}
        }
    }
    out
}

fn capitalised(day: &str) -> String {
    let mut chars = day.chars();
    chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::units::Timestamp;

    #[test]
    fn weekly_and_one_shot_windows_become_calendar_lines() {
        let policy = crate::window::tests::policy_with_windows(
            2,
            r#"[[window]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "01:00"
duration = "45m"
[[window]]
days = ["sat"]
start = "22:30"
duration = "3h"
[[window]]
from = "2026-12-24T10:00:00Z"
until = "2026-12-24T11:00:00Z"
[[window]]
from = "2026-11-24T10:00:00Z"
until = "2026-11-24T11:00:00Z"
"#,
        );
        let text = timer_drop_in(&policy, true, Timestamp::parse("2026-12-01T00:00:00Z").unwrap());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["[Timer]", "OnCalendar=", "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 01:00:00 UTC", "OnCalendar=Sat *-*-* 22:30:00 UTC", "OnCalendar=2026-12-24 10:00:00 UTC"], "{text}");
        assert!(text.contains("policy v2 (verified against the trust root)"), "{text}");
        assert!(timer_drop_in(&policy, false, Timestamp::EPOCH).contains("NOT VERIFIED"));
    }
}
