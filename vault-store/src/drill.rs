//! A restore drill of one snapshot (the rules and the report are `vault_core::lifecycle::drill`):
//! the receipt verified under the vault's key, the manifest against the hash the receipt signs,
//! then every file rebuilt in the manifest's order into a null sink, every chunk read from its
//! pack and re-hashed ([`StoreReader::read_chunk`]), each file's size and the whole tree's files,
//! bytes and chunks checked against the receipt. Nothing is written anywhere.

use vault_core::keys::PublicKey;
use vault_core::lifecycle::drill::SnapshotDrill;
use vault_core::push::manifest::EntryKind;

use crate::StoreReader;

/// Drills snapshot `id` of the store `reader` reads. `may_go_on` is asked before every file (a
/// window opening stops the drill: `None`); `pace` is told every chunk's bytes.
pub fn drill_snapshot(reader: &StoreReader, id: &str, dataset: &str, vault_key: &PublicKey, may_go_on: &dyn Fn() -> bool, pace: &dyn Fn(u64)) -> Option<SnapshotDrill> {
    let mut found = SnapshotDrill::new(id, dataset);
    let receipt = match reader.receipt(id).map_err(|e| e.to_string()).and_then(|r| r.verify(vault_key).map_err(|e| e.to_string())) {
        Ok(receipt) => receipt,
        Err(why) => {
            found.error(format!("receipt: {why}"));
            return Some(found);
        }
    };
    let manifest = match reader.manifest_checked(id, &receipt) {
        Ok(manifest) => manifest,
        Err(e) => {
            found.error(format!("manifest: {e}"));
            return Some(found);
        }
    };
    for entry in &manifest.entries {
        if !may_go_on() {
            return None;
        }
        if !matches!(entry.kind, EntryKind::File { .. } | EntryKind::Stream { .. }) {
            continue;
        }
        found.files += 1;
        let (mut rebuilt, errors_before) = (0u64, found.error_count);
        for chunk in entry.chunks() {
            found.chunks += 1;
            match reader.read_chunk(&chunk.id) {
                Ok(data) if data.len() as u64 == u64::from(chunk.len) => rebuilt += data.len() as u64,
                Ok(data) => found.error(format!("{}: chunk {} is {} bytes, the manifest says {}", entry.display_path(), chunk.id, data.len(), chunk.len)),
                Err(e) => found.error(format!("{}: chunk {}: {e}", entry.display_path(), chunk.id)),
            }
            pace(u64::from(chunk.len));
        }
        // A file whose chunks all read back but add up to another size (a manifest the vault
        // itself would have refused): said once, not on top of a chunk error.
        if rebuilt != entry.size() && found.error_count == errors_before {
            found.error(format!("{}: {rebuilt} bytes rebuilt, the manifest says {}", entry.display_path(), entry.size()));
        }
        found.bytes += rebuilt;
    }
    found.check_against(&receipt);
    Some(found)
}
