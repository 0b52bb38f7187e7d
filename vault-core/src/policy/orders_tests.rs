//! Orders: each kind accepted with the signatures it needs and refused without them, the
//! cooling-off, the veto, rollback per kind, and every binding a bundle has.

use super::*;
use crate::error::PolicyError;
use crate::keys::test_keys::key;
use crate::policy::root::tests::root_with;

fn now() -> Timestamp {
    Timestamp::parse("2026-11-25T10:00:00Z").unwrap()
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn root() -> TrustRoot {
    root_with("vault-01", 1, 2, &[1, 2, 3])
}

fn doc(kind: OrderKind, serial: u64) -> OrderDoc {
    OrderDoc {
        vault_id: "vault-01".into(),
        kind,
        serial,
        issued: "2026-11-25T09:00:00Z".into(),
        expires: "2026-12-20T00:00:00Z".into(),
        signed_for_root: root().digest(),
        snapshots: if kind == OrderKind::Veto { vec![] } else { vec!["20261120T010000Z-pg-1a2b3c4d".into()] },
        datasets: vec![],
        vetoes: None,
        export: None,
        reason: "ticket 4711: legal hold on the November dumps".into(),
    }
}

fn signed(doc: &OrderDoc, seeds: &[u8]) -> Vec<u8> {
    let mut envelope = unsigned(doc);
    for seed in seeds {
        envelope.sign_in(&key(*seed), ORDER_SIGNING_CONTEXT).unwrap();
    }
    envelope.to_bytes()
}

fn judge(bytes: &[u8], state: &OrderState) -> Result<Accepted> {
    verify(bytes, &root(), state, JudgedAt::trusted(now()), Timestamp::EPOCH, &AnySnapshot)
}

/// A vault that has exactly these snapshots.
struct Has(BTreeSet<String>);

impl SnapshotInventory for Has {
    fn has_snapshot(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

#[test]
fn one_admin_places_a_hold_and_only_the_quorum_lifts_it() {
    let held = judge(&signed(&doc(OrderKind::Hold, 1), &[2]), &OrderState::default()).unwrap();
    assert_eq!(held.signers, vec!["admin2".to_string()]);
    assert!(held.state.holds().snapshots.contains("20261120T010000Z-pg-1a2b3c4d"));
    let release = doc(OrderKind::Release, 1);
    let err = judge(&signed(&release, &[2]), &held.state).unwrap_err().to_string();
    assert!(err.contains("threshold not met for a release order under root v1: 1 valid signature(s) from distinct admin keys, need 2"), "{err}");
    let released = judge(&signed(&release, &[1, 2]), &held.state).unwrap();
    assert!(released.state.holds().snapshots.is_empty());
    assert_eq!(released.state.serials.get(&OrderKind::Hold), Some(&1));
}

#[test]
fn a_purge_waits_out_its_cooling_off_and_one_admin_can_veto_it() {
    let purge = doc(OrderKind::Purge, 1);
    assert!(judge(&signed(&purge, &[3]), &OrderState::default()).unwrap_err().to_string().contains("need 2"));
    let accepted = judge(&signed(&purge, &[1, 3]), &OrderState::default()).unwrap();
    assert_eq!(accepted.executes_at, Some(at("2026-11-28T10:00:00Z")), "72 hours after acceptance, on the vault's clock");
    // The root's min_retain goes with it, and reads back (a purge that cannot read it never runs).
    assert_eq!(accepted.state.pending_purges[0].min_retain(), Ok(root().caps.min_retain));
    let mut longer = root();
    longer.caps.min_retain = crate::units::Duration::parse("30d").unwrap();
    let purge_longer = OrderDoc { signed_for_root: longer.digest(), ..purge.clone() };
    let under_longer = verify(&signed(&purge_longer, &[1, 3]), &longer, &OrderState::default(), JudgedAt::trusted(now()), Timestamp::EPOCH, &AnySnapshot).unwrap();
    assert_eq!(under_longer.state.pending_purges[0].min_retain.as_deref(), Some("30d"));
    let pending = &accepted.state;
    let (due, lapsed, _) = purges_due(pending, at("2026-11-28T09:59:59Z"));
    assert!(due.is_empty() && lapsed.is_empty());
    let (due, lapsed, after) = purges_due(pending, at("2026-11-28T10:00:00Z"));
    assert_eq!((due.len(), lapsed.len(), after.pending_purges.len()), (1, 0, 0));
    assert_eq!(due[0].snapshots, purge.snapshots);
    // Not carried out before it expired: it lapses, having deleted nothing.
    let (due, lapsed, _) = purges_due(pending, at("2026-12-20T00:00:00Z"));
    assert_eq!((due.len(), lapsed.len()), (0, 1));
    // One admin's veto, naming the purge by its payload hash, cancels it.
    let mut veto = doc(OrderKind::Veto, 1);
    veto.vetoes = Some(accepted.id.clone());
    veto.reason = "this purge was not agreed".into();
    let vetoed = judge(&signed(&veto, &[2]), pending).unwrap();
    assert!(vetoed.state.pending_purges.is_empty());
    let mut unknown = veto.clone();
    unknown.serial = 2;
    unknown.vetoes = Some("0".repeat(64));
    assert!(judge(&signed(&unknown, &[2]), &vetoed.state).unwrap_err().to_string().contains("no purge order 0000"));
}

#[test]
fn a_purge_that_would_lapse_before_its_cooling_off_ends_is_refused() {
    let mut purge = doc(OrderKind::Purge, 1);
    purge.expires = "2026-11-27T00:00:00Z".into();
    let err = judge(&signed(&purge, &[1, 2]), &OrderState::default()).unwrap_err().to_string();
    assert!(err.contains("before its cooling-off ends (2026-11-28T10:00:00Z, 3d after acceptance)"), "{err}");
}

#[test]
fn serials_only_rise_and_each_kind_has_its_own() {
    let state = judge(&signed(&doc(OrderKind::Hold, 5), &[1]), &OrderState::default()).unwrap().state;
    let err = judge(&signed(&doc(OrderKind::Hold, 5), &[1]), &state).unwrap_err().to_string();
    assert_eq!(err, "rollback: hold order serial 5 <= accepted 5; sign a new hold order with a serial above 5");
    assert!(judge(&signed(&doc(OrderKind::Purge, 1), &[1, 2]), &state).is_ok());
}

#[test]
fn an_order_is_bound_to_its_vault_root_and_time_like_a_bundle() {
    let mut other_vault = doc(OrderKind::Hold, 1);
    other_vault.vault_id = "vault-02".into();
    assert!(matches!(judge(&signed(&other_vault, &[1]), &OrderState::default()), Err(Error::Policy(PolicyError::WrongVault { .. }))));
    let mut other_root = doc(OrderKind::Hold, 1);
    other_root.signed_for_root = root_with("vault-01", 2, 2, &[1, 2, 3]).digest();
    assert!(matches!(judge(&signed(&other_root, &[1]), &OrderState::default()), Err(Error::Policy(PolicyError::WrongTrustRoot { .. }))));
    let mut expired = doc(OrderKind::Hold, 1);
    expired.expires = "2026-11-25T09:30:00Z".into();
    assert!(matches!(judge(&signed(&expired, &[1]), &OrderState::default()), Err(Error::Policy(PolicyError::Expired { .. }))));
    let mut future = doc(OrderKind::Hold, 1);
    future.issued = "2026-11-26T00:00:00Z".into();
    assert!(matches!(judge(&signed(&future, &[1]), &OrderState::default()), Err(Error::Policy(PolicyError::IssuedInFuture { .. }))));
    // A stranger's signature counts for nothing, and a policy bundle's signing context does
    // not make an order: the same keys, another message.
    assert!(judge(&signed(&doc(OrderKind::Hold, 1), &[9]), &OrderState::default()).is_err());
    let mut as_policy = unsigned(&doc(OrderKind::Hold, 1));
    as_policy.sign(&key(1)).unwrap();
    assert!(matches!(judge(&as_policy.to_bytes(), &OrderState::default()), Err(Error::Policy(PolicyError::ThresholdNotMet { invalid: 1, .. }))));
    // A policy bundle is not an order, and an order is not a bundle.
    let bundle_type = Envelope { payload_type: crate::policy::bundle::PAYLOAD_TYPE.into(), ..unsigned(&doc(OrderKind::Hold, 1)) };
    assert!(matches!(judge(&bundle_type.to_bytes(), &OrderState::default()), Err(Error::Policy(PolicyError::WrongPayloadType { .. }))));
}

#[test]
fn what_an_order_names_is_checked_before_anything_is_applied() {
    let refused = |edit: &dyn Fn(&mut OrderDoc)| {
        let mut d = doc(OrderKind::Hold, 1);
        edit(&mut d);
        judge(&signed(&d, &[1, 2]), &OrderState::default()).unwrap_err().to_string()
    };
    assert!(refused(&|d| d.snapshots.clear()).contains("names at least one snapshot or dataset"));
    assert!(refused(&|d| d.snapshots.push(d.snapshots[0].clone())).contains("named twice"));
    assert!(refused(&|d| d.snapshots[0] = "../state".into()).contains("snapshots[0]"));
    assert!(refused(&|d| d.reason = " ".into()).contains("must say why"));
    assert!(refused(&|d| d.reason = "two\nlines".into()).contains("must say why"));
    assert!(refused(&|d| d.vetoes = Some("0".repeat(64))).contains("only a veto names a purge order"));
    assert!(refused(&|d| {
        d.kind = OrderKind::Veto;
        d.vetoes = Some("0".repeat(64));
    })
    .contains("a veto names one purge order"));
    assert!(refused(&|d| d.snapshots = (0..1001).map(|i| format!("s{i}")).collect()).contains("at most 1000"));
}

#[test]
fn the_order_state_round_trips_through_its_json() {
    let state = judge(&signed(&doc(OrderKind::Purge, 1), &[1, 2]), &OrderState::default()).unwrap().state;
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<OrderState>(&text).unwrap(), state);
    assert!(OrderState::default().is_empty() && !state.is_empty());
}

#[test]
fn an_admin_with_a_security_key_signs_orders_in_the_orders_namespace() {
    use crate::policy::root::Admin;
    use crate::policy::sshsig::tests::{security_key, ssh_sign};
    use crate::policy::sshsig::FLAG_USER_PRESENT;
    let mut root = root_with("vault-01", 1, 2, &[1]);
    root.admins.push(Admin::ssh("carol", security_key(4), false));
    let order = OrderDoc { signed_for_root: root.digest(), ..doc(OrderKind::Release, 1) };
    let sign = |namespace: &str| {
        let mut envelope = unsigned(&order);
        envelope.sign_in(&key(1), ORDER_SIGNING_CONTEXT).unwrap();
        let payload = envelope.payload_bytes().unwrap();
        envelope.add_sshsig(&ssh_sign(4, &security_key(4), namespace, "sha256", &payload, FLAG_USER_PRESENT)).unwrap();
        envelope.to_bytes()
    };
    let accepted = verify(&sign(ORDER_SIGNING_CONTEXT), &root, &OrderState::default(), JudgedAt::trusted(now()), Timestamp::EPOCH, &AnySnapshot).unwrap();
    assert_eq!(accepted.signers, vec!["admin1".to_string(), "carol".to_string()]);
    // A signature made for a policy bundle's namespace does not carry over to an order.
    let err = verify(&sign(crate::policy::bundle::SSH_NAMESPACE), &root, &OrderState::default(), JudgedAt::trusted(now()), Timestamp::EPOCH, &AnySnapshot).unwrap_err().to_string();
    assert!(err.contains("admin `carol`: signed in namespace `airgap-vault/policy-bundle/v1`"), "{err}");
}

#[test]
fn a_hold_names_only_snapshots_the_vault_has_and_holds_are_bounded() {
    let held = "20261120T010000Z-pg-1a2b3c4d".to_string();
    let vault = Has(BTreeSet::from([held.clone()]));
    let judge_on = |bytes: &[u8], state: &OrderState| verify(bytes, &root(), state, JudgedAt::trusted(now()), Timestamp::EPOCH, &vault);
    assert!(judge_on(&signed(&doc(OrderKind::Hold, 1), &[1]), &OrderState::default()).is_ok());
    let mut made_up = doc(OrderKind::Hold, 1);
    made_up.snapshots = vec![held.clone(), "20261120T010000Z-pg-00000000".into()];
    let err = judge_on(&signed(&made_up, &[1]), &OrderState::default()).unwrap_err().to_string();
    assert!(err.contains("the vault has no snapshot `20261120T010000Z-pg-00000000`"), "{err}");
    // Held snapshots and datasets stop at their bounds, whatever the orders' serials.
    let state = OrderState { held_snapshots: (0..MAX_HELD_SNAPSHOTS).map(|i| format!("20261120T010000Z-pg-{i:08x}")).collect(), ..OrderState::default() };
    let err = judge(&signed(&doc(OrderKind::Hold, 1), &[1]), &state).unwrap_err().to_string();
    assert!(err.contains(&format!("the hold would make {} held snapshots, at most {MAX_HELD_SNAPSHOTS}", MAX_HELD_SNAPSHOTS + 1)), "{err}");
    let mut datasets = doc(OrderKind::Hold, 1);
    datasets.snapshots.clear();
    datasets.datasets = (0..MAX_ORDER_DATASETS).map(|i| DatasetDoc { pusher: "db01".into(), dataset: format!("d{i}") }).collect();
    let mut state = OrderState::default();
    for serial in 1..=u64::try_from(MAX_HELD_DATASETS / MAX_ORDER_DATASETS).unwrap() {
        datasets.serial = serial;
        datasets.datasets.iter_mut().for_each(|d| d.pusher = format!("db{serial:02}"));
        state = judge(&signed(&datasets, &[1]), &state).unwrap().state;
    }
    datasets.serial += 1;
    datasets.datasets.iter_mut().for_each(|d| d.pusher = "db99".into());
    let err = judge(&signed(&datasets, &[1]), &state).unwrap_err().to_string();
    assert!(err.contains(&format!("held datasets, at most {MAX_HELD_DATASETS}")), "{err}");
    // What the quorum lifts makes room again.
    let mut release = doc(OrderKind::Release, 1);
    release.snapshots.clear();
    release.datasets = state.held_datasets.iter().take(MAX_ORDER_DATASETS).cloned().collect();
    let state = judge(&signed(&release, &[1, 2]), &state).unwrap().state;
    assert!(judge(&signed(&datasets, &[1]), &state).is_ok());
}

#[test]
fn the_order_state_stays_below_its_bound_whatever_the_quorum_signs() {
    // Purges of 1000 snapshots each (the quorum's; up to 64 may wait) until the state is full.
    let mut purge = doc(OrderKind::Purge, 1);
    purge.snapshots = (0..MAX_ORDER_SNAPSHOTS).map(|i| format!("20261120T010000Z-some-dataset-{i:08x}")).collect();
    let mut state = OrderState::default();
    let err = loop {
        match judge(&signed(&purge, &[1, 2]), &state) {
            Ok(accepted) => state = accepted.state,
            Err(e) => break e.to_string(),
        }
        purge.serial += 1;
        assert!(purge.serial < 64, "the bound is reached before the count of waiting purges");
    };
    assert!(err.contains(&format!("at most {MAX_ORDER_STATE_BYTES}")), "{err}");
    assert!(canonical::encode(&state).len() <= MAX_ORDER_STATE_BYTES);
}

#[test]
fn a_serial_may_not_leap_so_far_that_it_freezes_the_orders_after_it() {
    let err = judge(&signed(&doc(OrderKind::Hold, u64::MAX), &[1]), &OrderState::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        "hold order serial 18446744073709551615 leaps too far: the last accepted is 0, and a new one may be at most 4294967296 (2^32 above it), so that no serial can freeze the ones after it; sign it with a serial in that range"
    );
    // A serial made from a Unix time is within reach, and the next one after it too.
    let state = judge(&signed(&doc(OrderKind::Hold, 1_796_000_000), &[1]), &OrderState::default()).unwrap().state;
    assert!(judge(&signed(&doc(OrderKind::Hold, 1_796_000_000 + (1 << 32)), &[1]), &state).is_ok());
    assert!(judge(&signed(&doc(OrderKind::Hold, 1_796_000_001 + (1 << 32)), &[1]), &state).is_err());
}

#[test]
fn a_veto_is_never_refused_for_a_serial_another_veto_spent() {
    // A coerced quorum starts a throw-away purge and vetoes it with the highest serial a veto
    // could have; the next purge can still be vetoed by one honest admin with serial 1.
    let throw_away = judge(&signed(&doc(OrderKind::Purge, 1), &[1, 2]), &OrderState::default()).unwrap();
    let mut veto = doc(OrderKind::Veto, u64::MAX);
    veto.vetoes = Some(throw_away.id.clone());
    let state = judge(&signed(&veto, &[1]), &throw_away.state).unwrap().state;
    let real = judge(&signed(&doc(OrderKind::Purge, 2), &[1, 2]), &state).unwrap();
    let mut honest = doc(OrderKind::Veto, 1);
    honest.vetoes = Some(real.id.clone());
    let vetoed = judge(&signed(&honest, &[3]), &real.state).unwrap();
    assert!(vetoed.state.pending_purges.is_empty());
    // Replayed, a veto finds nothing to cancel: it names its own purge only.
    let err = judge(&signed(&honest, &[3]), &vetoed.state).unwrap_err().to_string();
    assert!(err.contains("no purge order"), "{err}");
}
