//! Every "Signed policy bundles" threat in shared/THREATS.md, each asserting its refusal.

use super::*;
use crate::error::PolicyError;
use crate::keys::test_keys::key;
use crate::policy::root::tests::root_with;
use crate::policy::tests::example_toml;
use crate::units::Duration;

const ADMINS: [u8; 3] = [1, 2, 3];
const NEW_ADMINS: [u8; 3] = [11, 12, 13];

fn now() -> Timestamp {
    Timestamp::parse("2026-11-25T10:00:00Z").unwrap()
}

fn root() -> TrustRoot {
    root_with("vault-01", 1, 2, &ADMINS)
}

fn policy() -> Policy {
    Policy::from_toml(&example_toml()).unwrap()
}

fn payload_for(policy: Policy, root: &TrustRoot) -> Payload {
    Payload { signed_for_root: root.digest(), policy, new_root: None }
}

fn signed(payload: &Payload, seeds: &[u8]) -> Envelope {
    let mut envelope = Envelope::new(payload);
    for seed in seeds {
        envelope.sign(&key(*seed)).unwrap();
    }
    envelope
}

fn bundle(policy: Policy, seeds: &[u8]) -> Vec<u8> {
    signed(&payload_for(policy, &root()), seeds).to_bytes()
}

fn verify_fresh(bytes: &[u8]) -> Result<Verified> {
    verify(bytes, &root(), &VaultState::default(), JudgedAt::trusted(now()))
}

fn with_policy(edit: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = policy();
    edit(&mut p);
    p
}

#[test]
fn a_good_bundle_is_accepted_and_moves_the_floors() {
    let verified = verify_fresh(&bundle(policy(), &[1, 3])).unwrap();
    assert_eq!(verified.policy, policy());
    assert_eq!(verified.signers, vec!["admin1".to_string(), "admin3".to_string()]);
    assert_eq!(verified.new_state.accepted_version, 7);
    assert_eq!(verified.new_state.time_floor, Timestamp::parse("2026-11-20T00:00:00Z").unwrap());
    assert!(!verified.rotated);
}

#[test]
fn tampered_payload_is_refused() {
    let mut envelope = signed(&payload_for(policy(), &root()), &[1, 2]);
    let tampered = payload_for(with_policy(|p| p.pushers[0].quota = crate::units::ByteSize::from_bytes(1 << 50)), &root());
    envelope.payload = BASE64.encode(tampered.canonical_bytes());
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 0, invalid: 2, .. })), "{err}");
}

#[test]
fn forged_signature_is_refused() {
    let mut envelope = signed(&payload_for(policy(), &root()), &[1, 2]);
    let mut sig = BASE64.decode(envelope.signatures[1].sig.as_ref().unwrap()).unwrap();
    sig[10] ^= 1;
    envelope.signatures[1].sig = Some(BASE64.encode(sig));
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, invalid: 1, .. })), "{err}");
    assert!(err.to_string().starts_with("threshold not met for root v1: 1 valid"), "{err}");
}

#[test]
fn signatures_over_other_bytes_do_not_carry_over() {
    // Signatures made over payload A, shipped with payload B.
    let a = signed(&payload_for(policy(), &root()), &[1, 2]);
    let mut b = Envelope::new(&payload_for(with_policy(|p| p.version = 8), &root()));
    b.signatures = a.signatures.clone();
    let err = verify_fresh(&b.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 0, invalid: 2, .. })), "{err}");
}

#[test]
fn what_is_applied_is_exactly_what_was_verified() {
    let bytes = bundle(policy(), &[1, 2]);
    let verified = verify_fresh(&bytes).unwrap();
    let payload_bytes = Envelope::from_bytes(&bytes).unwrap().payload_bytes().unwrap();
    assert_eq!(verified.payload_sha256, hex(ring::digest::digest(&ring::digest::SHA256, &payload_bytes).as_ref()));
    assert_eq!(verified.policy, Payload::from_bytes(&payload_bytes).unwrap().policy);
}

#[test]
fn fewer_signatures_than_the_threshold_are_refused() {
    let err = verify_fresh(&bundle(policy(), &[2])).unwrap_err();
    assert_eq!(err, Error::Policy(PolicyError::ThresholdNotMet { role: "root v1".into(), valid: 1, threshold: 2, invalid: 0, unknown: 0, repeated: 0, reasons: vec![] }));
    let err = verify_fresh(&bundle(policy(), &[])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 0, .. })), "{err}");
}

#[test]
fn a_repeated_signature_counts_once() {
    let mut envelope = signed(&payload_for(policy(), &root()), &[1]);
    envelope.signatures.push(envelope.signatures[0].clone());
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, repeated: 1, .. })), "{err}");
}

#[test]
fn a_second_key_id_for_the_same_key_counts_once() {
    // The same signature under a differently spelled key id is not a second signer.
    let mut envelope = signed(&payload_for(policy(), &root()), &[1]);
    let mut alias = envelope.signatures[0].clone();
    alias.keyid = alias.keyid.to_uppercase();
    envelope.signatures.push(alias);
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, unknown: 1, .. })), "{err}");

    // A root that names one public key twice (as loading refuses, see root tests) still
    // counts that key once when built by hand.
    let mut two_names = root();
    two_names.admins[1].key = two_names.admins[0].key;
    let envelope = signed(&payload_for(policy(), &two_names), &[1]);
    let err = verify(&envelope.to_bytes(), &two_names, &VaultState::default(), JudgedAt::trusted(now())).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, .. })), "{err}");
}

#[test]
fn signatures_from_keys_outside_the_root_do_not_count() {
    let err = verify_fresh(&bundle(policy(), &[1, 7, 8])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, unknown: 2, .. })), "{err}");
}

#[test]
fn the_same_key_cannot_sign_twice_through_the_api() {
    let mut envelope = signed(&payload_for(policy(), &root()), &[1]);
    let err = envelope.sign(&key(1)).unwrap_err();
    assert!(err.to_string().contains("already signed"), "{err}");
}

#[test]
fn rollback_is_refused() {
    let state = VaultState { accepted_version: 5, ..VaultState::default() };
    let err = verify(&bundle(with_policy(|p| p.version = 3), &[1, 2]), &root(), &state, JudgedAt::trusted(now())).unwrap_err();
    assert_eq!(err.to_string(), "rollback: version 3 <= accepted 5");
    let err = verify(&bundle(with_policy(|p| p.version = 5), &[1, 2]), &root(), &state, JudgedAt::trusted(now())).unwrap_err();
    assert_eq!(err, Error::Policy(PolicyError::Rollback { version: 5, accepted: 5 }));
}

#[test]
fn a_lowered_keep_last_is_recorded_with_the_higher_one_kept_for_the_purge_delay() {
    use crate::lifecycle::retention::Retention;
    let first = verify_fresh(&bundle(with_policy(|p| p.retention = Retention { keep_last: 30 }), &[1, 2])).unwrap().new_state;
    assert_eq!((first.accepted_keep_last, first.keep_last_floor), (Some(30), None));
    let lowered = verify(&bundle(with_policy(|p| (p.version, p.retention) = (8, Retention { keep_last: 1 })), &[1, 2]), &root(), &first, JudgedAt::trusted(now())).unwrap().new_state;
    assert_eq!(lowered.accepted_keep_last, Some(1));
    assert_eq!(lowered.keep_last_floor, Some((30, now().saturating_add(root().caps.purge_delay))));
    // It survives the state file.
    assert_eq!(VaultState::from_bytes(&lowered.to_bytes()).unwrap(), lowered);
}

#[test]
fn a_version_may_not_leap_so_far_that_it_freezes_every_later_bundle() {
    // A coerced quorum's version u64::MAX would make every later bundle, a root rotation
    // included, a rollback: it is refused, and a leap of exactly 2^32 is not.
    let state = VaultState { accepted_version: 5, ..VaultState::default() };
    let err = verify(&bundle(with_policy(|p| p.version = u64::MAX), &[1, 2]), &root(), &state, JudgedAt::trusted(now())).unwrap_err();
    assert_eq!(err, Error::Policy(PolicyError::VersionLeap { version: u64::MAX, accepted: 5, highest: 5 + (1 << 32) }));
    assert!(err.to_string().contains("may be at most 4294967301"), "{err}");
    let verified = verify(&bundle(with_policy(|p| p.version = 5 + (1 << 32)), &[1, 2]), &root(), &state, JudgedAt::trusted(now())).unwrap();
    assert_eq!(verified.new_state.accepted_version, 5 + (1 << 32));
}

#[test]
fn an_expired_bundle_is_refused() {
    let late = Timestamp::parse("2027-02-01T00:00:00Z").unwrap();
    let err = verify(&bundle(policy(), &[1, 2]), &root(), &VaultState::default(), JudgedAt::trusted(late)).unwrap_err();
    assert_eq!(err.to_string(), "expired: bundle expired at 2027-01-31T00:00:00Z, vault time is 2027-02-01T00:00:00Z");
}

#[test]
fn freeze_with_the_clock_turned_back_is_refused_by_the_time_floor() {
    // The clock says 2026-11-25, but the vault has already seen (signed) time past expiry.
    let state = VaultState { time_floor: Timestamp::parse("2027-03-01T00:00:00Z").unwrap(), ..VaultState::default() };
    let err = verify(&bundle(policy(), &[1, 2]), &root(), &state, JudgedAt::trusted(now())).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::Expired { now, .. }) if now == state.time_floor), "{err}");
}

/// Issue 14, item 2: while the vault distrusts its clock (an RTC at 1970 or 2099), a stick is
/// judged against the time floor, and its quorum-signed `issued` may be ahead of the floor by
/// up to CLOCK_PLAUSIBLE_AHEAD_SECS: the stick is how the vault recovers. The same stick with
/// the clock trusted at 1970 is "issued in the future", which was the brick.
#[test]
fn with_the_clock_distrusted_a_stick_is_judged_by_the_floor_and_its_issue_time() {
    let rtc_1970 = Timestamp::from_unix(10).unwrap();
    let built = Timestamp::parse("2026-10-01T00:00:00Z").unwrap();
    let state = VaultState { time_floor: built, ..VaultState::default() };
    let distrusted = JudgedAt { now: rtc_1970, clock_trusted: false };
    let verified = verify(&bundle(policy(), &[1, 2]), &root(), &state, distrusted).expect("a valid stick recovers a vault with a wrong clock");
    assert_eq!(verified.new_state.time_floor, policy().issued.unwrap(), "the floor rises to the signed issue time");
    let err = verify(&bundle(policy(), &[1, 2]), &root(), &state, JudgedAt::trusted(rtc_1970)).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::IssuedInFuture { .. })), "{err}");
    // Distrusted is not anything goes: an issue time implausibly far past the floor is refused.
    let far = with_policy(|p| {
        p.issued = Some(built.saturating_add(Duration::from_secs(CLOCK_PLAUSIBLE_AHEAD_SECS + 86_400).unwrap()));
        p.expires = p.issued.unwrap().saturating_add(Duration::from_secs(86_400).unwrap());
    });
    let err = verify(&bundle(far, &[1, 2]), &root(), &state, distrusted).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::IssuedInFuture { tolerance_secs: CLOCK_PLAUSIBLE_AHEAD_SECS, .. })), "{err}");
    // And a 2099 clock expires nothing: judged at the floor, the stick is current.
    let rtc_2099 = Timestamp::parse("2099-01-01T00:00:00Z").unwrap();
    assert!(verify(&bundle(policy(), &[1, 2]), &root(), &state, JudgedAt { now: rtc_2099, clock_trusted: false }).is_ok());
}

#[test]
fn issued_in_the_future_is_refused() {
    let p = with_policy(|p| p.issued = Some(now().saturating_add(Duration::from_secs(3600).unwrap())));
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::IssuedInFuture { .. })), "{err}");
}

#[test]
fn a_bundle_for_another_vault_is_refused() {
    let p = with_policy(|p| p.vault_id = "vault-02".into());
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "wrong vault: bundle is for vault `vault-02`, this is vault `vault-01`");
}

#[test]
fn a_bundle_for_another_trust_root_is_refused() {
    // Same admins, same vault id, but signed for a root with other caps.
    let mut other_root = root();
    other_root.caps.max_window = Duration::from_secs(24 * 3600).unwrap();
    let envelope = signed(&payload_for(policy(), &other_root), &[1, 2]);
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::WrongTrustRoot { ref vault, .. }) if *vault == root().digest()), "{err}");
}

// ---- trust-root rotation -------------------------------------------------------------------

fn new_root(version: u64) -> TrustRoot {
    root_with("vault-01", version, 2, &NEW_ADMINS)
}

fn rotation(new: TrustRoot, seeds: &[u8]) -> Vec<u8> {
    let payload = Payload { signed_for_root: root().digest(), policy: policy(), new_root: Some(new) };
    signed(&payload, seeds).to_bytes()
}

#[test]
fn rotation_to_the_next_version_signed_by_both_sets_is_accepted() {
    let verified = verify_fresh(&rotation(new_root(2), &[1, 2, 11, 13])).unwrap();
    assert!(verified.rotated);
    assert_eq!(verified.root, new_root(2));
    assert_eq!(verified.new_state.rotated_root, Some(new_root(2)));

    // From now on the new keys alone sign, and the old ones no longer suffice.
    let state = verified.new_state;
    let next = with_policy(|p| p.version = 8);
    let by_new = signed(&payload_for(next.clone(), &new_root(2)), &[11, 12]).to_bytes();
    assert_eq!(verify(&by_new, &root(), &state, JudgedAt::trusted(now())).unwrap().policy.version, 8);
    let by_old = signed(&payload_for(next, &new_root(2)), &[1, 2]).to_bytes();
    let err = verify(&by_old, &root(), &state, JudgedAt::trusted(now())).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { ref role, valid: 0, unknown: 2, .. }) if role == "root v2"), "{err}");
}

#[test]
fn rotation_that_skips_a_version_is_refused() {
    let err = verify_fresh(&rotation(new_root(3), &[1, 2, 11, 12])).unwrap_err();
    assert_eq!(err.to_string(), "root rotation: must go from version 1 to exactly 2, bundle carries version 3");
    let err = verify_fresh(&rotation(new_root(1), &[1, 2, 11, 12])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::RotationVersion { found: 1, .. })), "{err}");
}

#[test]
fn rotation_signed_by_the_new_keys_alone_is_refused() {
    let err = verify_fresh(&rotation(new_root(2), &[11, 12, 13])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { ref role, valid: 0, .. }) if role == "root v1"), "{err}");
}

#[test]
fn rotation_signed_by_the_old_keys_alone_is_refused() {
    let err = verify_fresh(&rotation(new_root(2), &[1, 2, 3])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { ref role, valid: 0, .. }) if role == "new root v2"), "{err}");
    let err = verify_fresh(&rotation(new_root(2), &[1, 2, 11])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { ref role, valid: 1, .. }) if role == "new root v2"), "{err}");
}

#[test]
fn rotation_to_another_vault_is_refused() {
    let err = verify_fresh(&rotation(root_with("vault-02", 2, 2, &NEW_ADMINS), &[1, 2, 11, 12])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::RotationVault { .. })), "{err}");
}

#[test]
fn caps_of_the_new_root_apply_to_a_rotation_bundle() {
    let mut tight = new_root(2);
    tight.caps.max_window = Duration::from_secs(30 * 60).unwrap();
    let err = verify_fresh(&rotation(tight, &[1, 2, 11, 12])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::CapExceeded { ref what, .. }) if what == "window[0] length"), "{err}");
}

// ---- endless data --------------------------------------------------------------------------

#[test]
fn a_huge_bundle_is_refused_before_parsing() {
    let huge = vec![b'{'; MAX_BUNDLE_BYTES + 1];
    let err = verify_fresh(&huge).unwrap_err();
    assert_eq!(err, Error::TooLarge { what: "bundle", size: MAX_BUNDLE_BYTES + 1, limit: MAX_BUNDLE_BYTES });
}

#[test]
fn deep_nesting_is_refused_without_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(verify_fresh(deep.as_bytes()), Err(Error::Malformed { what: "bundle", .. })));

    // Nesting inside a properly signed payload is refused by the payload parser too.
    let mut envelope = Envelope::new(&payload_for(policy(), &root()));
    let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    envelope.payload = BASE64.encode(nested.as_bytes());
    envelope.sign(&key(1)).unwrap();
    envelope.sign(&key(2)).unwrap();
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(matches!(err, Error::Malformed { what: "bundle payload", .. }), "{err}");
}

#[test]
fn unknown_fields_are_refused_in_envelope_and_payload() {
    let mut value: serde_json::Value = serde_json::from_slice(&bundle(policy(), &[1, 2])).unwrap();
    value["comment"] = "hi".into();
    let err = verify_fresh(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(err.to_string().contains("unknown field `comment`"), "{err}");

    let mut payload: serde_json::Value = serde_json::from_slice(&payload_for(policy(), &root()).canonical_bytes()).unwrap();
    payload["policy"]["network"]["dhcp"] = true.into();
    let bytes = serde_json::to_vec(&payload).unwrap();
    let mut envelope = Envelope::new(&payload_for(policy(), &root()));
    envelope.payload = BASE64.encode(&bytes);
    envelope.sign(&key(1)).unwrap();
    envelope.sign(&key(2)).unwrap();
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert!(err.to_string().contains("unknown field `dhcp`"), "{err}");
}

#[test]
fn too_many_signatures_are_refused() {
    let mut envelope = signed(&payload_for(policy(), &root()), &[1]);
    envelope.signatures = vec![envelope.signatures[0].clone(); MAX_SIGNATURES + 1];
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert_eq!(err, Error::Policy(PolicyError::TooManySignatures { count: MAX_SIGNATURES + 1, limit: MAX_SIGNATURES }));
}

#[test]
fn a_non_canonical_payload_is_refused_even_when_signed() {
    let canonical = payload_for(policy(), &root()).canonical_bytes();
    let text = String::from_utf8(canonical).unwrap().replace("\"45m\"", "\"2700s\"");
    let mut envelope = Envelope::new(&payload_for(policy(), &root()));
    envelope.payload = BASE64.encode(text.as_bytes());
    envelope.sign(&key(1)).unwrap();
    envelope.sign(&key(2)).unwrap();
    let err = verify_fresh(&envelope.to_bytes()).unwrap_err();
    assert_eq!(err, Error::NonCanonical { what: "bundle payload" });
}

#[test]
fn a_wrong_payload_type_is_refused() {
    let mut envelope = signed(&payload_for(policy(), &root()), &[1, 2]);
    envelope.payload_type = "application/json".into();
    assert!(matches!(verify_fresh(&envelope.to_bytes()), Err(Error::Policy(PolicyError::WrongPayloadType { .. }))));
}

// ---- policy beyond the root's caps ---------------------------------------------------------

#[test]
fn a_window_longer_than_the_cap_is_refused() {
    let p = with_policy(|p| p.windows[1] = crate::policy::Window::Once { from: Timestamp::parse("2026-12-01T02:00:00Z").unwrap(), until: Timestamp::parse("2026-12-01T07:00:00Z").unwrap() });
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "cap exceeded: window[1] length is 5h, the trust root allows at most 4h");
}

#[test]
fn too_much_open_time_in_a_day_is_refused() {
    // Three 3h one-shots on one day: each within the 4h window cap, 9h > 8h together.
    let p = with_policy(|p| {
        p.windows.truncate(1);
        for h in [4, 8, 12] {
            p.windows.push(crate::policy::Window::Once {
                from: Timestamp::parse(&format!("2026-12-05T{h:02}:00:00Z")).unwrap(),
                until: Timestamp::parse(&format!("2026-12-05T{:02}:00:00Z", h + 3)).unwrap(),
            });
        }
    });
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "cap exceeded: open time in the 24 hours from 2026-12-05T04:00:00Z is 9h, the trust root allows at most 8h");
}

/// One-shot windows on top of the weekday one, `(from, hours)` each.
fn with_once_windows(windows: &[(&str, i64)]) -> Policy {
    with_policy(|p| {
        p.windows.truncate(1);
        for (from, hours) in windows {
            let from = Timestamp::parse(from).unwrap();
            p.windows.push(crate::policy::Window::Once { from, until: from.saturating_add(Duration::from_secs(hours * 3600).unwrap()) });
        }
    })
}

#[test]
fn the_caps_hold_for_windows_as_merged() {
    // Two touching 3h windows across midnight: each within the 4h cap, one 6h run together.
    let p = with_once_windows(&[("2026-12-05T22:00:00Z", 3), ("2026-12-06T01:00:00Z", 3)]);
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "cap exceeded: open run from 2026-12-05T22:00:00Z to 2026-12-06T04:00:00Z (touching windows merged) is 6h, the trust root allows at most 4h");
    // 9h in the 24 hours from Saturday 14:00, though no UTC day holds more than 6h of it.
    let p = with_once_windows(&[("2026-12-05T14:00:00Z", 3), ("2026-12-05T19:00:00Z", 3), ("2026-12-06T01:00:00Z", 3)]);
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "cap exceeded: open time in the 24 hours from 2026-12-05T14:00:00Z is 9h, the trust root allows at most 8h");
    // The same windows a day apart are within both caps.
    let p = with_once_windows(&[("2026-12-05T14:00:00Z", 3), ("2026-12-05T19:00:00Z", 3), ("2026-12-06T15:00:00Z", 3)]);
    verify_fresh(&bundle(p, &[1, 2])).unwrap();
}

#[test]
fn validity_and_grace_beyond_the_caps_are_refused() {
    let p = with_policy(|p| p.expires = Timestamp::parse("2027-06-01T00:00:00Z").unwrap());
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::CapExceeded { ref what, .. }) if what.starts_with("validity")), "{err}");
    let p = with_policy(|p| p.close.grace = Duration::from_secs(3600).unwrap());
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "cap exceeded: close.grace is 1h, the trust root allows at most 15m");
}

#[test]
fn a_pusher_holding_an_admin_key_is_refused() {
    let p = with_policy(|p| p.pushers[0].key = key(2).public_key());
    let err = verify_fresh(&bundle(p, &[1, 2])).unwrap_err();
    assert_eq!(err.to_string(), "pusher `db-backup` uses admin key `admin2`: admin keys may not push");
}

// ---- the accepted bundle, verified again at every start ------------------------------------

#[test]
fn the_accepted_bundle_verifies_again_under_the_root_that_accepted_it() {
    let bytes = bundle(policy(), &[1, 2]);
    let state = verify_fresh(&bytes).unwrap().new_state;
    assert_eq!(reverify_accepted(&bytes, &root(), &state).unwrap(), policy());
}

#[test]
fn a_re_imaged_root_drops_the_policy_the_old_root_signed() {
    let bytes = bundle(policy(), &[1, 2]);
    let state = verify_fresh(&bytes).unwrap().new_state;
    // Re-imaged with new admin keys: same vault, same version number, other root.
    let err = reverify_accepted(&bytes, &root_with("vault-01", 1, 2, &NEW_ADMINS), &state).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::WrongTrustRoot { .. })), "{err}");
    // Re-imaged with the next root version: the old bundle is not signed for it either.
    let err = reverify_accepted(&bytes, &new_root(2), &state).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::WrongTrustRoot { .. })), "{err}");
    // Same keys, tighter caps: the policy's windows no longer fit and it is not signed for it.
    let mut tighter = root();
    tighter.caps.max_window = Duration::from_secs(60).unwrap();
    assert!(reverify_accepted(&bytes, &tighter, &state).is_err());
}

#[test]
fn an_accepted_bundle_altered_or_swapped_on_disk_is_dropped() {
    let bytes = bundle(policy(), &[1, 2]);
    let state = verify_fresh(&bytes).unwrap().new_state;
    // One signature short of the threshold (someone edited the stored file).
    let thin = bundle(policy(), &[1]);
    let err = reverify_accepted(&thin, &root(), &state).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, .. })), "{err}");
    // A validly signed older policy put in its place.
    let older = bundle(with_policy(|p| p.version -= 1), &[1, 2]);
    let err = reverify_accepted(&older, &root(), &state).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::AcceptedVersion { .. })), "{err}");
}

#[test]
fn a_bundle_that_rotated_to_the_root_in_force_verifies_under_it() {
    let bytes = rotation(new_root(2), &[1, 2, 11, 13]);
    let state = verify_fresh(&bytes).unwrap().new_state;
    assert_eq!(reverify_accepted(&bytes, &root(), &state).unwrap().version, policy().version);
    // Re-imaged with a root v3 of other keys: the rotation bundle is not the root in force's.
    let err = reverify_accepted(&bytes, &root_with("vault-01", 3, 2, &[21, 22, 23]), &state).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::WrongTrustRoot { .. })), "{err}");
}

// --- admins who sign with OpenSSH (SSHSIG), plain keys and FIDO2 security keys --------------

use crate::policy::root::Admin;
use crate::policy::sshsig::tests::{plain_key, security_key, ssh_sign};
use crate::policy::sshsig::{FLAG_USER_PRESENT, FLAG_USER_VERIFIED};

/// 2 of 3: admin1 signs raw, admin2 with an OpenSSH key file, admin3 with a security key
/// (user verification as given).
fn mixed_root(user_verification: bool) -> TrustRoot {
    let mut root = root_with("vault-01", 1, 2, &[1]);
    root.admins.push(Admin::ssh("admin2", plain_key(2), false));
    root.admins.push(Admin::ssh("admin3", security_key(3), user_verification));
    TrustRoot::from_toml(&root.to_toml()).unwrap()
}

fn ssh_signed(root: &TrustRoot, raw: &[u8], ssh: &[(u8, u8)]) -> Vec<u8> {
    let mut envelope = Envelope::new(&payload_for(policy(), root));
    for seed in raw {
        envelope.sign(&key(*seed)).unwrap();
    }
    let payload = envelope.payload_bytes().unwrap();
    for (seed, flags) in ssh {
        let admin_key = root.admins.iter().find(|a| a.key == key(*seed).public_key()).unwrap().ssh_key().unwrap();
        envelope.add_sshsig(&ssh_sign(*seed, &admin_key, SSH_NAMESPACE, "sha512", &payload, *flags)).unwrap();
    }
    envelope.to_bytes()
}

#[test]
fn raw_and_openssh_signatures_count_toward_one_quorum() {
    let root = mixed_root(false);
    let at = JudgedAt::trusted(now());
    let verified = verify(&ssh_signed(&root, &[1], &[(3, FLAG_USER_PRESENT)]), &root, &VaultState::default(), at).unwrap();
    assert_eq!(verified.signers, vec!["admin1".to_string(), "admin3".to_string()]);
    let verified = verify(&ssh_signed(&root, &[], &[(2, 0), (3, FLAG_USER_PRESENT)]), &root, &VaultState::default(), at).unwrap();
    assert_eq!(verified.signers, vec!["admin2".to_string(), "admin3".to_string()]);
    let reloaded = TrustRoot::from_toml(&root.to_toml()).unwrap();
    assert_eq!(reloaded, root, "OpenSSH admins survive the root's TOML");
}

#[test]
fn a_security_key_signature_without_presence_does_not_count_and_the_refusal_says_why() {
    let root = mixed_root(false);
    let err = verify(&ssh_signed(&root, &[1], &[(3, 0)]), &root, &VaultState::default(), JudgedAt::trusted(now())).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::ThresholdNotMet { valid: 1, invalid: 1, .. })), "{err}");
    assert!(err.to_string().contains("admin `admin3`: the security key signed without user presence (flags 0x00)"), "{err}");
}

#[test]
fn user_verification_is_required_when_the_root_says_so() {
    let root = mixed_root(true);
    let at = JudgedAt::trusted(now());
    let err = verify(&ssh_signed(&root, &[1], &[(3, FLAG_USER_PRESENT)]), &root, &VaultState::default(), at).unwrap_err();
    assert!(err.to_string().contains("without user verification"), "{err}");
    verify(&ssh_signed(&root, &[1], &[(3, FLAG_USER_PRESENT | FLAG_USER_VERIFIED)]), &root, &VaultState::default(), at).unwrap();
    assert!(root.to_toml().contains("user_verification = true"), "{}", root.to_toml());
}

#[test]
fn an_admin_signs_only_the_way_the_root_lists_its_key() {
    let root = mixed_root(false);
    // admin2's key bytes, used raw, although the root lists admin2 as an OpenSSH key.
    let mut envelope = Envelope::new(&payload_for(policy(), &root));
    envelope.sign(&key(1)).unwrap();
    envelope.sign(&key(2)).unwrap();
    let err = verify(&envelope.to_bytes(), &root, &VaultState::default(), JudgedAt::trusted(now())).unwrap_err();
    assert!(err.to_string().contains("admin `admin2`: the root lists an OpenSSH key"), "{err}");
    // An SSHSIG made for an order's namespace does not sign a bundle.
    let mut envelope = Envelope::new(&payload_for(policy(), &root));
    envelope.sign(&key(1)).unwrap();
    let payload = envelope.payload_bytes().unwrap();
    envelope.add_sshsig(&ssh_sign(2, &plain_key(2), crate::policy::orders::ORDER_SIGNING_CONTEXT, "sha512", &payload, 0)).unwrap();
    let err = verify(&envelope.to_bytes(), &root, &VaultState::default(), JudgedAt::trusted(now())).unwrap_err();
    assert!(err.to_string().contains("signed in namespace `airgap-vault/order/v1`"), "{err}");
    // One key signs once, whichever way.
    assert!(envelope.add_sshsig(&ssh_sign(2, &plain_key(2), SSH_NAMESPACE, "sha512", &payload, 0)).is_err());
}

#[test]
fn one_key_listed_raw_and_as_openssh_is_one_admin() {
    let mut root = root_with("vault-01", 1, 2, &[1, 2]);
    root.admins.push(Admin::ssh("again", plain_key(1), false));
    let err = TrustRoot::from_toml(&root.to_toml()).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::DuplicateAdminKey { ref first, ref second, .. }) if first == "admin1" && second == "again"), "{err}");
    let mut root = root_with("vault-01", 1, 1, &[1]);
    root.admins.push(Admin::ssh("plain", plain_key(2), true));
    let err = TrustRoot::from_toml(&root.to_toml()).unwrap_err().to_string();
    assert!(err.contains("admin[1].user_verification") && err.contains("only a security key"), "{err}");
}
