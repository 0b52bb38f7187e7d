//! Policy arrives on a USB stick hot-plugged into the running appliance (QMP): accepted and in
//! force across a reboot; a bad stick of every kind is refused with its reason, and the policy
//! in force stays.

use std::time::Duration;

use qemu_tests::{Artifacts, Boot, Vm, VmOptions, Workbench};
use serde_json::Value;

const EVENT_WAIT: Duration = Duration::from_secs(60);

fn refused_because(vm: &mut Vm, stick: &std::path::Path, reason: &str) {
    let verdict = vm.present_stick(stick);
    assert_eq!(verdict["event"], "policy_refused", "{} was not refused: {verdict}", stick.display());
    let said = verdict["reason"].as_str().unwrap_or_default();
    assert!(said.contains(reason), "{}: expected `{reason}` in `{said}`", stick.display());
}

#[test]
fn a_signed_stick_is_applied_and_bad_sticks_are_refused_with_their_reason() {
    let artifacts = Artifacts::from_env();
    let bench = Workbench::new(&artifacts, "usb-policy");
    let mut vm = Vm::boot(&artifacts, "usb-policy", Boot::Direct, VmOptions::default());
    vm.wait_for("sealed", Duration::from_secs(120), |e| e["event"] == "status" && e["state"] == "sealed");

    // A valid bundle, 2 of 3 admins: accepted, and the console shows it in force.
    let v2 = bench.policy_toml(2, "vault-test", 86_400, 30);
    let good = bench.stick(&bench.sign(&v2, &["alice", "carol"], "v2.bundle"), false);
    let verdict = vm.present_stick(&good);
    assert_eq!(verdict["event"], "policy_accepted", "{verdict}");
    assert_eq!(verdict["version"], 2);
    let status = vm.wait_for("status with policy v2", EVENT_WAIT, |e| e["event"] == "status" && e["policy_version"] == 2);
    assert_eq!(status["state"], "sealed", "the window is a day away: {status}");

    // The same stick again: nothing to do, said plainly, and not a refusal.
    let again = vm.present_stick(&good);
    assert_eq!((&again["event"], &again["version"]), (&serde_json::json!("policy_unchanged"), &serde_json::json!(2)), "{again}");

    // Bad sticks, each refused with its rule (written --unchecked where vaultctl would refuse
    // them too; a rollback it cannot see without the vault's state).
    let v3 = bench.policy_toml(3, "vault-test", 86_400, 30);
    refused_because(&mut vm, &bench.stick(&bench.sign(&v3, &["alice"], "under.bundle"), true), "threshold not met");
    // One admin's signature twice (vaultctl will not do it; an attacker will).
    let once: Value = serde_json::from_str(&std::fs::read_to_string(bench.sign(&v3, &["alice"], "once.bundle")).unwrap()).unwrap();
    let mut twice = once.clone();
    twice["signatures"].as_array_mut().unwrap().push(once["signatures"][0].clone());
    let twice = bench.file("dup.bundle", twice.to_string().as_bytes());
    refused_because(&mut vm, &bench.stick(&twice, true), "1 valid signature(s) from distinct admin keys, need 2");
    let v1 = bench.policy_toml(1, "vault-test", 86_400, 30);
    refused_because(&mut vm, &bench.stick(&bench.sign(&v1, &["alice", "bob"], "old.bundle"), false), "rollback: version 1 <= accepted 2");
    let other = bench.policy_toml(4, "vault-other", 86_400, 30);
    let other = bench.sign_for(&bench.other_root("vault-other"), &other, &["alice", "bob"], "other.bundle");
    refused_because(&mut vm, &bench.stick(&other, true), "wrong vault: bundle is for vault `vault-other`");
    let signed = std::fs::read_to_string(bench.sign(&v3, &["alice", "bob"], "v3.bundle")).unwrap();
    let tampered = tamper(&signed);
    refused_because(&mut vm, &bench.stick(&bench.file("tampered.bundle", tampered.as_bytes()), true), "threshold not met");
    refused_because(&mut vm, &bench.stick(&bench.file("huge.bundle", &vec![b' '; 3 << 20]), true), "over the limit of 1048576");
    refused_because(&mut vm, &bench.file("garbage.img", &vec![0xa5; 8 << 20]), "not a FAT filesystem");

    // None of that moved the policy in force.
    vm.wait_for("status with policy v2", Duration::from_secs(90), |e| e["event"] == "status" && e["policy_version"] == 2);

    // A stick pulled out as soon as it is in: whatever the vault managed to read, it says what
    // happened, keeps a consistent policy, and takes the next stick as usual.
    let v3_stick = bench.stick(&bench.dir.join("v3.bundle"), false);
    let id = vm.plug_stick(&v3_stick);
    let inserted = vm.wait_event("usb_inserted", EVENT_WAIT);
    vm.unplug_stick(&id);
    let removed = vm.wait_event("usb_removed", EVENT_WAIT);
    let between: Vec<Value> = vm.events().into_iter().filter(|e| e["seq"].as_u64() > inserted["seq"].as_u64() && e["seq"].as_u64() < removed["seq"].as_u64()).collect();
    println!("stick pulled as it was read: {between:?}");
    let next = bench.stick(&bench.sign(&bench.policy_toml(5, "vault-test", 86_400, 30), &["bob", "carol"], "v5.bundle"), false);
    let verdict = vm.present_stick(&next);
    assert_eq!(verdict["event"], "policy_accepted", "the stick after a pulled one: {verdict}");
    assert_eq!(verdict["version"], 5);
    assert!(!vm.events().iter().any(|e| e["event"] == "fatal"));

    // A power cut, then a boot on the same disk: the policy and its version floor hold.
    let disk = vm.power_cut();
    let mut vm = Vm::boot(&artifacts, "usb-policy-reboot", Boot::Direct, VmOptions { disk: Some(disk), ..VmOptions::default() });
    let started = vm.wait_event("started", Duration::from_secs(120));
    assert_eq!(started["policy_version"], 5, "{started}");
    refused_because(&mut vm, &bench.stick(&bench.dir.join("v3.bundle"), false), "rollback: version 3 <= accepted 5");

    // The reset button: a warm reboot keeps it all too.
    vm.reset();
    let started = vm.wait_event("started", Duration::from_secs(120));
    assert_eq!(started["policy_version"], 5, "after a reset: {started}");
    vm.pass();
}

/// Changes one character of the signed payload (base64 inside the JSON envelope), so the
/// signatures no longer cover the bytes.
fn tamper(bundle: &str) -> String {
    let mut envelope: Value = serde_json::from_str(bundle).expect("bundle JSON");
    let payload = envelope["payload"].as_str().expect("payload").to_string();
    let mut bytes = payload.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    envelope["payload"] = Value::String(String::from_utf8(bytes).unwrap());
    serde_json::to_string(&envelope).unwrap()
}
