//! Runs the "Sign your first policy" block of README.md exactly as written, so the README
//! can never drift from what the commands do.

use std::path::Path;
use std::process::Command;

fn readme_flow() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let begin = readme.find("<!-- readme-flow:begin -->").expect("README has a readme-flow block");
    let end = readme.find("<!-- readme-flow:end -->").expect("README closes the readme-flow block");
    let block = &readme[begin..end];
    let start = block.find("```sh\n").expect("the flow is a sh code block") + "```sh\n".len();
    let stop = block[start..].find("\n```").expect("the code block ends") + start;
    block[start..stop].to_string()
}

#[test]
fn readme_flow_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vaultctl")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash").args(["-euo", "pipefail", "-c", &readme_flow()]).current_dir(dir.path()).env("PATH", path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "README flow failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    // Step 2 and 4 print what the README says they print.
    assert!(stdout.contains("root digest: "), "{stdout}");
    assert!(stderr.contains("signed vault vault-01 policy v1 as alice (key id "), "{stderr}");
    // Step 4 is refused for the reason the README gives, step 5 passes.
    assert!(stderr.contains("threshold not met for root v1: 1 valid signature(s)"), "{stderr}");
    assert!(stdout.contains("refused, as it should be"), "{stdout}");
    assert!(stdout.contains("OK: policy.bundle verifies against root v1"), "{stdout}");
    assert!(stdout.contains("signed by alice, carol (threshold 2)"), "{stdout}");
    assert!(stdout.contains("window[0]: every mon,tue,wed,thu,fri at 01:00 UTC for 45m"), "{stdout}");
    assert!(stdout.contains("verified against root.toml (root v1) as of "), "{stdout}");
    assert!(stdout.contains("opening(s) in the 7 day(s)"), "{stdout}");
    let keys = dir.path().join("demo-keys");
    for file in ["alice.key", "alice.pub", "root.toml", "policy.toml", "policy.bundle"] {
        assert!(keys.join(file).exists(), "{file} was not written");
    }
}
