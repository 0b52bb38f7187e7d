//! The pusher's copy of the vault's signed policy: verified against the trust root as the vault
//! verifies it, it says when the vault's link is up. A push can then wait for the window and
//! retry inside it, and a stream (`pg_dump | vaultctl push -`) is not started while it is shut.

use std::path::Path;
use std::time::Duration;

use vault_core::keys::PublicKey;
use vault_core::policy::bundle::{self, JudgedAt, MAX_BUNDLE_BYTES};
use vault_core::policy::schedule::{self, WindowState};
use vault_core::policy::state::VaultState;
use vault_core::policy::Policy;
use vault_core::units::Timestamp;

use crate::error::{CliError, Result};

/// The longest single sleep while waiting: the window is judged again after it, so a clock
/// step or a suspended laptop does not oversleep by more.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Retries inside the window start at this and double up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Verifies the policy copy against the root, at `now`, with no state (a pusher knows no
/// floors): threshold, vault id, root binding, caps, expiry.
pub fn load_policy(policy: &Path, root: &Path, now: Timestamp) -> Result<Policy> {
    let root = crate::load_root(root)?;
    let bytes = vault_io::read_bounded(policy, MAX_BUNDLE_BYTES)?;
    let verified = bundle::verify(&bytes, &root, &VaultState::default(), JudgedAt::trusted(now))
        .map_err(|e| CliError::Usage(format!("--policy {}: {e} (the vault would refuse it too; get the bundle the vault runs)", policy.display())))?;
    Ok(verified.policy)
}

/// The policy lists this pusher's key, or the vault would refuse every session.
pub fn check_pusher(policy: &Policy, key: &PublicKey) -> Result<()> {
    if policy.pushers.iter().any(|p| p.key == *key) {
        return Ok(());
    }
    Err(CliError::Refused(format!(
        "this pusher's key ({key}) is not in vault {}'s policy v{}: the vault refuses its sessions. Send the key to the admins to add it as a [[pusher]]",
        policy.vault_id, policy.version
    )))
}

/// The window's end if it is open at `now`; otherwise the refusal a push gets while it is shut.
pub fn open_until(policy: &Policy, now: Timestamp) -> Result<Timestamp> {
    match schedule::state_at(policy, now) {
        WindowState::Open { until } => Ok(until),
        WindowState::Closed { next_open: Some(next) } => Err(CliError::NoAnswer(format!(
            "the window is closed (vault {} policy v{}): the next opens at {next}; nothing was sent. Push then, or add --wait-for-window",
            policy.vault_id, policy.version
        ))),
        WindowState::Closed { next_open: None } => Err(never_opens(policy)),
    }
}

fn never_opens(policy: &Policy) -> CliError {
    CliError::NoAnswer(format!("no window opens before vault {}'s policy v{} expires at {}: the vault stays shut. Ask the admins for a new policy", policy.vault_id, policy.version, policy.expires))
}

/// One line about the window at `now`, for `--dry-run`.
pub fn describe(policy: &Policy, now: Timestamp) -> String {
    match schedule::state_at(policy, now) {
        WindowState::Open { until } => format!("window: open now, until {until} (policy v{})", policy.version),
        WindowState::Closed { next_open: Some(next) } => format!("window: closed now; the next opens at {next} (policy v{})", policy.version),
        WindowState::Closed { next_open: None } => format!("window: none opens before the policy (v{}) expires at {}", policy.version, policy.expires),
    }
}

/// Sleeps until the policy's window is open and returns when it closes. `clock` and `sleep`
/// are injected so tests run in no time.
pub fn wait_for_window(policy: &Policy, clock: impl Fn() -> Timestamp, sleep: impl Fn(Duration)) -> Result<Timestamp> {
    let mut announced = None;
    loop {
        let now = clock();
        match schedule::state_at(policy, now) {
            WindowState::Open { until } => return Ok(until),
            WindowState::Closed { next_open: None } => return Err(never_opens(policy)),
            WindowState::Closed { next_open: Some(next) } => {
                if announced != Some(next) {
                    eprintln!("vaultctl: the window is closed; waiting until {next}, when vault {}'s policy v{} opens it", policy.vault_id, policy.version);
                    announced = Some(next);
                }
                let secs = u64::try_from(next.secs_since(now)).unwrap_or(0).max(1);
                sleep(Duration::from_secs(secs).min(MAX_SLEEP));
            }
        }
    }
}

/// Runs `attempt`, and while it fails as if the vault were not there yet (unreachable, no
/// answer) and the window is open (`until`), again after a growing pause. A refusal is final.
pub fn retry_while_open<T>(until: Option<Timestamp>, clock: impl Fn() -> Timestamp, sleep: impl Fn(Duration), mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt() {
            Err(err @ (CliError::Unreachable(_) | CliError::NoAnswer(_))) => {
                let Some(until) = until else { return Err(err) };
                let secs_left = until.secs_since(clock());
                if secs_left <= i64::try_from(backoff.as_secs()).unwrap_or(i64::MAX) {
                    return Err(CliError::NoAnswer(format!("{err}; retried until the window closed at {until}")));
                }
                eprintln!("vaultctl: {err}; retrying in {}s (the window is open until {until})", backoff.as_secs());
                sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;

    /// Policy v`version` of vault-01, expiring 2027-01-31, with these `[[window]]` tables: the
    /// fixture of this module's tests and `systemd`'s.
    pub(crate) fn policy_with_windows(version: u64, windows: &str) -> Policy {
        let header = format!("vault_id = \"vault-01\"\nversion = {version}\nexpires = \"2027-01-31T00:00:00Z\"\n[network]\nmac = \"52:54:00:12:34:56\"\naddress = \"192.0.2.10/24\"\nport = 7400\n");
        Policy::from_toml(&(header + windows)).unwrap()
    }

    /// Saturdays 22:00-01:00 UTC.
    fn policy() -> Policy {
        policy_with_windows(3, "[[window]]\ndays = [\"sat\"]\nstart = \"22:00\"\nduration = \"3h\"\n")
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    /// A clock that only moves when the code under test sleeps.
    struct FakeTime(Cell<i64>);

    impl FakeTime {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix(self.0.get()).unwrap()
        }
        fn sleep(&self, d: Duration) {
            self.0.set(self.0.get() + i64::try_from(d.as_secs()).unwrap());
        }
    }

    #[test]
    fn waiting_sleeps_until_the_next_opening_and_returns_its_end() {
        let time = FakeTime(Cell::new(at("2026-12-02T10:00:00Z").unix()));
        let until = wait_for_window(&policy(), || time.now(), |d| time.sleep(d)).unwrap();
        assert_eq!(until, at("2026-12-06T01:00:00Z"));
        assert_eq!(time.now(), at("2026-12-05T22:00:00Z"), "woke exactly at the opening");
        let late = FakeTime(Cell::new(at("2027-01-30T23:00:00Z").unix()));
        let until = wait_for_window(&policy(), || late.now(), |d| late.sleep(d)).unwrap();
        assert_eq!(until, at("2027-01-31T00:00:00Z"), "a window ends at the policy's expiry at the latest");
    }

    #[test]
    fn a_policy_with_no_opening_left_is_refused_without_waiting() {
        let time = FakeTime(Cell::new(at("2027-02-01T00:00:00Z").unix()));
        let err = wait_for_window(&policy(), || time.now(), |_| panic!("must not sleep")).unwrap_err().to_string();
        assert!(err.contains("no window opens before vault vault-01's policy v3 expires at 2027-01-31T00:00:00Z"), "{err}");
        let err = open_until(&policy(), at("2026-12-02T10:00:00Z")).unwrap_err().to_string();
        assert!(err.contains("the window is closed") && err.contains("next opens at 2026-12-05T22:00:00Z"), "{err}");
    }

    #[test]
    fn retries_back_off_inside_the_window_and_stop_at_its_end_or_at_a_refusal() {
        let time = FakeTime(Cell::new(at("2026-12-05T22:00:00Z").unix()));
        let tries = Cell::new(0);
        let result: Result<()> = retry_while_open(
            Some(at("2026-12-05T22:01:00Z")),
            || time.now(),
            |d| time.sleep(d),
            || {
                tries.set(tries.get() + 1);
                Err(CliError::Unreachable("connection refused".into()))
            },
        );
        let err = result.unwrap_err();
        assert!(matches!(err, CliError::NoAnswer(_)) && err.to_string().contains("retried until the window closed at 2026-12-05T22:01:00Z"), "{err}");
        assert_eq!(tries.get(), 5, "2 + 4 + 8 + 16 s of pauses, then too little window left for 32");
        let refusals = Cell::new(0);
        let refused: Result<()> = retry_while_open(
            Some(at("2026-12-05T23:00:00Z")),
            || time.now(),
            |d| time.sleep(d),
            || {
                refusals.set(refusals.get() + 1);
                Err(CliError::Refused("quota exceeded".into()))
            },
        );
        assert!(matches!(refused, Err(CliError::Refused(_))));
        assert_eq!(refusals.get(), 1, "a refusal is not retried");
        let once = Cell::new(0);
        let _ = retry_while_open::<()>(
            None,
            || time.now(),
            |_| panic!("no retry without a window"),
            || {
                once.set(once.get() + 1);
                Err(CliError::NoAnswer("timed out".into()))
            },
        );
        assert_eq!(once.get(), 1);
    }
}
