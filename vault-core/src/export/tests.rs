//! Export orders, media, selection and manifests: each accepted in its well-formed shape and
//! refused, by name, in every other.

use super::manifest::{check_path, ExportManifest, ExportedFile, ExportedSnapshot, FORMAT};
use super::medium::{adoption, Adoption, MediumLabel, MediumSeal};
use super::selection::{select, Sealed};
use super::*;
use crate::error::Error;
use crate::error::PolicyError;
use crate::keys::test_keys::key;
use crate::keys::SignedDoc;
use crate::policy::bundle::JudgedAt;
use crate::policy::orders::{self, export_done, exports_for, DatasetDoc, OrderDoc, OrderKind, OrderState, PendingExport, ORDER_SIGNING_CONTEXT};
use crate::policy::root::tests::root_with;
use crate::units::Timestamp;

/// `age-keygen` output (the recipient of a throwaway identity).
pub const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
const MEDIUM: &str = "0123456789abcdef0123456789abcdef";

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn spec() -> ExportSpec {
    ExportSpec { medium: MEDIUM.into(), recipients: vec![RECIPIENT.into()], newest: None, since: None }
}

fn export_doc(serial: u64, root: &crate::policy::root::TrustRoot) -> OrderDoc {
    OrderDoc {
        vault_id: "vault-01".into(),
        kind: OrderKind::Export,
        serial,
        issued: "2026-11-25T09:00:00Z".into(),
        expires: "2026-12-20T00:00:00Z".into(),
        signed_for_root: root.digest(),
        snapshots: vec![],
        datasets: vec![DatasetDoc { pusher: "db01".into(), dataset: "pg".into() }],
        vetoes: None,
        export: Some(spec()),
        reason: "weekly cartridge for the off-site safe".into(),
    }
}

fn signed(doc: &OrderDoc, seeds: &[u8]) -> Vec<u8> {
    let mut envelope = orders::unsigned(doc);
    for seed in seeds {
        envelope.sign_in(&key(*seed), ORDER_SIGNING_CONTEXT).unwrap();
    }
    envelope.to_bytes()
}

#[test]
fn recipients_are_age_x25519_keys_and_nothing_else() {
    check_recipient("r", RECIPIENT).unwrap();
    for bad in [
        "",
        "age1",
        &RECIPIENT.to_uppercase(),
        // One character changed: the checksum fails.
        &RECIPIENT.replace("ql3z", "ql3y"),
        // An SSH key, a scrypt passphrase, another Bech32 prefix.
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN",
        "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    ] {
        let err = check_recipient("export.recipients[0]", bad).unwrap_err().to_string();
        assert!(err.contains("export.recipients[0]") && err.contains("not an age recipient"), "{bad}: {err}");
    }
}

#[test]
fn an_export_order_needs_the_roots_export_threshold_and_waits_for_its_medium() {
    let mut root = root_with("vault-01", 1, 3, &[1, 2, 3]);
    root.export_threshold = 2;
    let judged = JudgedAt::trusted(at("2026-11-25T10:00:00Z"));
    let doc = export_doc(1, &root);
    let err = orders::verify(&signed(&doc, &[1]), &root, &OrderState::default(), judged, Timestamp::EPOCH, &orders::AnySnapshot).unwrap_err().to_string();
    assert!(err.contains("threshold not met for a export order under root v1: 1 valid signature(s) from distinct admin keys, need 2"), "{err}");
    // Two of three: less than a purge needs, what the root says an export needs.
    let accepted = orders::verify(&signed(&doc, &[1, 3]), &root, &OrderState::default(), judged, Timestamp::EPOCH, &orders::AnySnapshot).unwrap();
    assert_eq!(accepted.kind, OrderKind::Export);
    assert_eq!(accepted.state.pending_exports.len(), 1);
    let pending = &accepted.state.pending_exports[0];
    assert_eq!((pending.id.as_str(), &pending.export, pending.signers.len()), (accepted.id.as_str(), &spec(), 2));
    // Replayed: its own serial floor.
    let err = orders::verify(&signed(&doc, &[1, 3]), &root, &accepted.state, judged, Timestamp::EPOCH, &orders::AnySnapshot).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::OrderRollback { kind: "export", serial: 1, accepted: 1 })), "{err}");

    let (due, state) = exports_for(&accepted.state, MEDIUM, at("2026-12-01T00:00:00Z"));
    assert_eq!(due.len(), 1);
    assert!(exports_for(&state, "ffffffffffffffffffffffffffffffff", at("2026-12-01T00:00:00Z")).0.is_empty(), "another medium gets nothing");
    assert!(export_done(&state, &due[0].id).pending_exports.is_empty());
    let (lapsed, after) = exports_for(&accepted.state, MEDIUM, at("2026-12-20T00:00:00Z"));
    assert!(lapsed.is_empty() && after.pending_exports.is_empty(), "an order not carried out by its expiry lapses");
}

#[test]
fn export_fields_are_checked_by_name() {
    let root = root_with("vault-01", 1, 1, &[1]);
    let refuse = |change: &dyn Fn(&mut OrderDoc), expect: &str| {
        let mut doc = export_doc(1, &root);
        change(&mut doc);
        let err = orders::verify(&signed(&doc, &[1]), &root, &OrderState::default(), JudgedAt::trusted(at("2026-11-25T10:00:00Z")), Timestamp::EPOCH, &orders::AnySnapshot).unwrap_err().to_string();
        assert!(err.contains(expect), "expected `{expect}` in: {err}");
    };
    refuse(&|d| d.export = None, "an export order says onto which medium");
    refuse(&|d| d.export.as_mut().unwrap().medium = "sdb".into(), "`sdb` is not a medium id");
    refuse(&|d| d.export.as_mut().unwrap().recipients.clear(), "0 recipients");
    refuse(&|d| d.export.as_mut().unwrap().recipients.push(RECIPIENT.into()), "is named twice");
    refuse(&|d| d.export.as_mut().unwrap().newest = Some(0), "export.newest");
    refuse(&|d| d.export.as_mut().unwrap().since = Some("yesterday".into()), "export.since");
    refuse(
        &|d| {
            d.datasets.clear();
            d.snapshots = vec!["20261120T010000Z-pg-1a2b3c4d".into()];
            d.export.as_mut().unwrap().newest = Some(3);
        },
        "name a dataset",
    );
    refuse(
        &|d| {
            d.kind = OrderKind::Hold;
        },
        "only an export order names a medium; this is a hold",
    );
}

fn sealed(id: &str, dataset: &str, day: u32) -> Sealed {
    Sealed { id: id.into(), pusher: "db01".into(), dataset: dataset.into(), received_at: at(&format!("2026-11-{day:02}T01:00:00Z")) }
}

fn pending(snapshots: &[&str], newest: Option<u32>, since: Option<&str>) -> PendingExport {
    PendingExport {
        id: "00".repeat(32),
        snapshots: snapshots.iter().map(|s| s.to_string()).collect(),
        datasets: vec![DatasetDoc { pusher: "db01".into(), dataset: "pg".into() }],
        export: ExportSpec { newest, since: since.map(str::to_string), ..spec() },
        reason: "r".into(),
        signers: vec![],
        accepted_at: "2026-11-25T10:00:00Z".into(),
        expires: "2026-12-20T00:00:00Z".into(),
    }
}

#[test]
fn selection_takes_the_newest_of_each_dataset_and_names_what_is_gone() {
    let all = [sealed("a-pg-1", "pg", 1), sealed("b-pg-2", "pg", 2), sealed("c-pg-3", "pg", 3), sealed("d-web-3", "web", 3)];
    assert_eq!(select(&pending(&[], None, None), &all).unwrap().snapshots, vec!["c-pg-3"]);
    assert_eq!(select(&pending(&[], Some(2), None), &all).unwrap().snapshots, vec!["b-pg-2", "c-pg-3"]);
    assert_eq!(select(&pending(&[], None, Some("2026-11-02T00:00:00Z")), &all).unwrap().snapshots, vec!["b-pg-2", "c-pg-3"]);
    assert_eq!(select(&pending(&[], Some(1), Some("2026-11-02T00:00:00Z")), &all).unwrap().snapshots, vec!["c-pg-3"]);
    let named = select(&pending(&["d-web-3", "gone"], None, None), &all).unwrap();
    assert_eq!((named.snapshots, named.missing), (vec!["c-pg-3".to_string(), "d-web-3".to_string()], vec!["gone".to_string()]));
    let many: Vec<Sealed> = (0..1001).map(|i| Sealed { id: format!("s{i:04}"), ..sealed("", "pg", 1) }).collect();
    let err = select(&pending(&[], Some(1000), None), &many).map(|s| s.snapshots.len());
    assert_eq!(err.unwrap(), 1000);
    let err = select(&pending(&[], None, Some("2026-10-01T00:00:00Z")), &many).unwrap_err().to_string();
    assert!(err.contains("comes to 1001 snapshots, at most 1000"), "{err}");
}

#[test]
fn a_medium_is_adopted_once_and_known_by_its_seal_after() {
    let vault = key(40);
    let label = MediumLabel::new(MEDIUM, "weekly-a").unwrap();
    assert_eq!(MediumLabel::from_bytes(&label.to_bytes()).unwrap(), label);
    for bad in [&b"{}"[..], b"not json", &[b' '; 5000]] {
        assert!(MediumLabel::from_bytes(bad).is_err());
    }
    let spaced = String::from_utf8(label.to_bytes()).unwrap().replace(",", ", ");
    assert!(matches!(MediumLabel::from_bytes(spaced.as_bytes()), Err(Error::NonCanonical { .. })));
    assert!(MediumLabel::new(MEDIUM, "../etc").is_err());

    assert_eq!(adoption(&label, None, "vault-01", &vault.public_key()).unwrap(), Adoption::Unsealed);
    let seal = MediumSeal::sign("vault-01", &label, at("2026-11-30T00:00:00Z"), &vault).to_file_bytes();
    assert!(matches!(adoption(&label, Some(&seal), "vault-01", &vault.public_key()).unwrap(), Adoption::Ours(s) if s.name == "weekly-a"));
    let err = adoption(&label, Some(&seal), "vault-01", &key(41).public_key()).unwrap_err().to_string();
    assert!(err.contains("does not verify"), "another vault's medium: {err}");
    let err = adoption(&label, Some(&seal), "vault-02", &vault.public_key()).unwrap_err().to_string();
    assert!(err.contains("names vault `vault-01`, this is `vault-02`"), "{err}");
    let relabelled = MediumLabel::new("ffffffffffffffffffffffffffffffff", "weekly-a").unwrap();
    let err = adoption(&relabelled, Some(&seal), "vault-01", &vault.public_key()).unwrap_err().to_string();
    assert!(err.contains("the label was changed"), "{err}");
    assert!(adoption(&label, Some(b"garbage"), "vault-01", &vault.public_key()).is_err());
}

fn manifest(vault: &crate::keys::SigningKey) -> ExportManifest {
    ExportManifest {
        format: FORMAT,
        vault_id: "vault-01".into(),
        vault_key: vault.public_key().to_string(),
        export_id: "20261130T020000Z-0a0b0c0d".into(),
        medium_id: MEDIUM.into(),
        order: "ab".repeat(32),
        created_at: "2026-11-30T02:00:00Z".into(),
        recipients: vec![RECIPIENT.into()],
        snapshots: vec![ExportedSnapshot { id: "c-pg-3".into(), pusher: "db01".into(), dataset: "pg".into(), received_at: "2026-11-03T01:00:00Z".into() }],
        missing: vec![],
        checkpoint: "vault-01\n1\nAAAA\n".into(),
        files: vec![
            ExportedFile { path: "store/packs/0011223344556677.pack.age".into(), bytes: 1000, sha256: "cd".repeat(32) },
            ExportedFile { path: "store/snapshots/c-pg-3/receipt.json".into(), bytes: 900, sha256: "ef".repeat(32) },
        ],
    }
}

#[test]
fn an_export_manifest_verifies_under_the_vault_key_and_refuses_every_bad_field() {
    let vault = key(40);
    let good = manifest(&vault);
    let signed = good.sign(&vault);
    assert_eq!(ExportManifest::verify(&signed, &vault.public_key()).unwrap(), good);
    assert_eq!(good.total_bytes(), 1900);
    assert!(good.files[0].encrypted() && !good.files[1].encrypted());
    let tampered = SignedDoc { body: signed.body.replace("\"bytes\":1000", "\"bytes\":1001"), ..signed.clone() };
    assert!(ExportManifest::verify(&tampered, &vault.public_key()).unwrap_err().to_string().contains("does not verify"));
    assert!(ExportManifest::verify(&signed, &key(41).public_key()).is_err());

    let refuse = |change: &dyn Fn(&mut ExportManifest), expect: &str| {
        let mut bad = manifest(&vault);
        change(&mut bad);
        let err = ExportManifest::verify(&bad.sign(&vault), &vault.public_key()).unwrap_err().to_string();
        assert!(err.contains(expect), "expected `{expect}` in: {err}");
    };
    refuse(&|m| m.format = 2, "export format 2");
    refuse(&|m| m.vault_key = key(41).public_key().to_string(), "the manifest names");
    refuse(&|m| m.files[0].path = "../../etc/passwd".into(), "files[0].path");
    refuse(&|m| m.files[0].path = "store/.hidden".into(), "files[0].path");
    refuse(&|m| m.files[0].path = "/abs".into(), "files[0].path");
    refuse(&|m| m.files.swap(0, 1), "out of order");
    refuse(&|m| m.files[1] = m.files[0].clone(), "listed twice");
    refuse(&|m| m.files[0].sha256 = "xy".into(), "files[0].sha256");
    refuse(&|m| m.snapshots.push(m.snapshots[0].clone()), "listed twice");
    refuse(&|m| m.recipients = vec!["age1nope".into()], "recipients[0]");
    for path in ["store/packs/a.pack.age", "log/tile/0/x001/234", "log/tile/entries/000.p/5", "drill-report.json"] {
        check_path("p", path).unwrap();
    }
}

fn rotation_toml(extra: &str) -> String {
    crate::policy::tests::example_toml()
        + &format!("[rotation]\nmedia = [\"{MEDIUM}\", \"ffffffffffffffffffffffffffffffff\"]\nevery = \"1d\"\nrecipients = [\"{RECIPIENT}\"]\ndatasets = [\"db01/pg\"]\n{extra}")
}

#[test]
fn a_rotation_in_the_policy_names_its_media_cadence_and_what_goes_and_is_bounded() {
    use super::rotation::{beyond_keep, Rotation};
    let policy = crate::policy::Policy::from_toml(&rotation_toml("")).unwrap();
    let rotation = policy.rotation.clone().expect("a rotation");
    assert_eq!((rotation.every.secs(), rotation.newest, rotation.keep, rotation.verify_share), (86_400, 1, 1, 4));
    assert!(rotation.names(MEDIUM) && !rotation.names("00000000000000000000000000000000"));
    assert_eq!(crate::policy::Policy::from_doc(&policy.to_doc()).unwrap(), policy, "round trip");
    assert!(policy.describe().iter().any(|l| l.contains("rotation: 2 media, one written every 1d")), "{:?}", policy.describe());
    assert!(crate::policy::Policy::from_toml(&crate::policy::tests::example_toml()).unwrap().to_doc().rotation.is_none(), "absent stays absent");
    for (extra, field) in [("keep = 0\n", "rotation.keep"), ("newest = 5000\n", "rotation.newest"), ("verify_share = 65\n", "rotation.verify_share")] {
        let err = crate::policy::Policy::from_toml(&rotation_toml(extra)).unwrap_err().to_string();
        assert!(err.contains(field), "{extra}: {err}");
    }
    let twice = rotation_toml("").replace("\"ffffffffffffffffffffffffffffffff\"", &format!("\"{MEDIUM}\""));
    assert!(crate::policy::Policy::from_toml(&twice).unwrap_err().to_string().contains("is named twice"));
    let same_twice = rotation_toml("").replace(&format!("recipients = [\"{RECIPIENT}\"]"), &format!("recipients = [\"{RECIPIENT}\", \"{RECIPIENT}\"]"));
    let err = crate::policy::Policy::from_toml(&same_twice).unwrap_err().to_string();
    assert!(err.contains("rotation.recipients[1]") && err.contains("is named twice"), "{err}");
    let hourly = rotation_toml("").replace("every = \"1d\"", "every = \"12h\"");
    assert!(crate::policy::Policy::from_toml(&hourly).unwrap_err().to_string().contains("rotation.every"));
    let no_slash = rotation_toml("").replace("db01/pg", "db01pg");
    assert!(crate::policy::Policy::from_toml(&no_slash).unwrap_err().to_string().contains("PUSHER/DATASET"));

    // As an export: the same id for the same rotation, another for another.
    let now = at("2026-12-01T00:00:00Z");
    let export = rotation.as_export(MEDIUM, now);
    assert_eq!(export.id, rotation.as_export(MEDIUM, at("2027-01-01T00:00:00Z")).id);
    assert_ne!(export.id, Rotation { keep: 2, ..rotation.clone() }.as_export(MEDIUM, now).id);
    assert_eq!((export.export.newest, export.datasets.len()), (Some(1), 1));
    crate::export::check_spec(&export.export, false).unwrap();

    // Overdue a day after `every` is missed; a different share each day.
    let since = at("2026-12-01T00:00:00Z");
    assert!(!rotation.is_overdue(None, since, at("2026-12-02T23:00:00Z")));
    assert!(rotation.is_overdue(None, since, at("2026-12-03T00:00:01Z")));
    assert!(!rotation.is_overdue(Some(at("2026-12-02T12:00:00Z")), since, at("2026-12-03T00:00:01Z")));
    assert_ne!(Rotation::share_turn(since), Rotation::share_turn(at("2026-12-02T00:00:00Z")));

    let ids: Vec<String> = ["20261203T000000Z-c", "20261201T000000Z-a", "20261202T000000Z-b"].iter().map(|s| s.to_string()).collect();
    assert_eq!(beyond_keep(&ids, 1), vec!["20261201T000000Z-a".to_string(), "20261202T000000Z-b".to_string()]);
    assert_eq!(beyond_keep(&ids, 3), Vec::<String>::new());
}
