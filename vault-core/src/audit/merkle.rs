//! RFC 6962 Merkle tree hashing, tree heads and proofs, as RFC 9162 section 2.1 specifies them
//! (the same tree Certificate Transparency and the Go checksum database build): a leaf hashes as
//! `SHA-256(0x00 || entry)`, an inner node as `SHA-256(0x01 || left || right)`, and a tree of `n`
//! leaves splits at the largest power of two below `n`.
//!
//! Every hash a proof or a tree head needs is the root of a complete, aligned subtree: `2^level`
//! leaves starting at leaf `index * 2^level`. Where those come from (tiles on a disk, a vector in a
//! test) is the caller's [`Subtrees`].

use super::AuditError;

pub type Hash = [u8; 32];

/// The most hashes a proof may carry (two per level of a tree of 2^64 leaves).
pub const MAX_PROOF_HASHES: usize = 128;

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(entry);
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    ctx.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The tree hash of no leaves: `SHA-256()`.
pub fn empty_root() -> Hash {
    ring::digest::digest(&ring::digest::SHA256, b"").as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Where the hashes of complete subtrees come from.
pub trait Subtrees {
    /// The root of the `2^level` leaves starting at leaf `index << level` (all of them in the log).
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, AuditError>;
}

/// The largest power of two strictly below `n` (`n` >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `lo..hi` (`hi - lo` >= 1, aligned as RFC 9162's recursion always is).
fn range_hash(lo: u64, hi: u64, source: &dyn Subtrees) -> Result<Hash, AuditError> {
    let n = hi - lo;
    if n.is_power_of_two() {
        let level = u8::try_from(n.trailing_zeros()).expect("a u64 has at most 64 trailing zeros");
        return source.subtree(level, lo >> level);
    }
    let k = split(n);
    Ok(node_hash(&range_hash(lo, lo + k, source)?, &range_hash(lo + k, hi, source)?))
}

/// The tree hash (root) of the first `size` leaves.
pub fn tree_hash(size: u64, source: &dyn Subtrees) -> Result<Hash, AuditError> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(0, size, source)
}

/// The proof that the tree of `old` leaves is a prefix of the tree of `new` leaves
/// (RFC 9162 2.1.4.1, `PROOF(m, D[n])`).
pub fn consistency_proof(old: u64, new: u64, source: &dyn Subtrees) -> Result<Vec<Hash>, AuditError> {
    if old > new {
        return Err(AuditError::Inconsistent(format!("a tree of {old} entries cannot be a prefix of one of {new}")));
    }
    let mut proof = Vec::new();
    if old == 0 || old == new {
        return Ok(proof);
    }
    subproof(old, 0, new, true, source, &mut proof)?;
    Ok(proof)
}

fn subproof(m: u64, lo: u64, hi: u64, whole: bool, source: &dyn Subtrees, proof: &mut Vec<Hash>) -> Result<(), AuditError> {
    let n = hi - lo;
    if m == n {
        if !whole {
            proof.push(range_hash(lo, hi, source)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(m, lo, lo + k, whole, source, proof)?;
        proof.push(range_hash(lo + k, hi, source)?);
    } else {
        subproof(m - k, lo + k, hi, false, source, proof)?;
        proof.push(range_hash(lo, lo + k, source)?);
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 2.1.4.2): the tree of `old` leaves with root `old_root`
/// is a prefix of the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(old: u64, old_root: &Hash, new: u64, new_root: &Hash, proof: &[Hash]) -> Result<(), AuditError> {
    let fail = |why: &str| Err(AuditError::Inconsistent(format!("from {old} to {new} entries: {why}")));
    if proof.len() > MAX_PROOF_HASHES {
        return fail("the proof is longer than any tree needs");
    }
    if old > new {
        return fail("the log shrank");
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root { Ok(()) } else { fail("same size, different roots (a forked log)") };
    }
    if old == 0 {
        return if proof.is_empty() { Ok(()) } else { fail("a proof from the empty tree must be empty") };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else { return fail("the proof is empty") };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return fail("the proof is longer than the trees need");
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return fail("the proof is shorter than the trees need");
    }
    if fr != *old_root {
        return fail("it does not lead to the older root (the log was rewritten)");
    }
    if sr != *new_root {
        return fail("it does not lead to the newer root");
    }
    Ok(())
}

/// The proof that leaf `index` is in the tree of `size` leaves (RFC 9162 2.1.3.1, `PATH(m, D[n])`).
pub fn inclusion_proof(index: u64, size: u64, source: &dyn Subtrees) -> Result<Vec<Hash>, AuditError> {
    if index >= size {
        return Err(AuditError::NotIncluded { index, reason: format!("the tree has {size} entries") });
    }
    let mut proof = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    let mut steps = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            steps.push((lo + k, hi));
            hi = lo + k;
        } else {
            steps.push((lo, lo + k));
            lo += k;
            m -= k;
        }
    }
    // PATH lists the sibling nearest the leaf first.
    for (a, b) in steps.into_iter().rev() {
        proof.push(range_hash(a, b, source)?);
    }
    Ok(proof)
}

/// Checks an inclusion proof (RFC 9162 2.1.3.2): `leaf` (a [`leaf_hash`]) is entry `index` of the
/// tree of `size` entries with root `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, root: &Hash, proof: &[Hash]) -> Result<(), AuditError> {
    let fail = |why: &str| Err(AuditError::NotIncluded { index, reason: why.to_string() });
    if index >= size {
        return fail("past the end of the tree");
    }
    if proof.len() > MAX_PROOF_HASHES {
        return fail("the proof is longer than any tree needs");
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return fail("the proof is longer than the tree needs");
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 || r != *root {
        return fail("the proof does not lead to the root");
    }
    Ok(())
}

/// Every leaf hash in memory: the simplest [`Subtrees`] (tests, and verifying a short log).
pub struct Leaves(pub Vec<Hash>);

impl Subtrees for Leaves {
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        let width = 1u64 << level;
        let lo = index.checked_mul(width).ok_or_else(|| AuditError::Missing { what: format!("subtree {level}/{index}"), reason: "past any log".into() })?;
        let hi = lo.saturating_add(width);
        if hi > self.0.len() as u64 {
            return Err(AuditError::Missing { what: format!("subtree {level}/{index}"), reason: format!("the log has {} entries", self.0.len()) });
        }
        let (lo, hi) = (usize::try_from(lo).expect("below hi"), usize::try_from(hi).expect("at most the number of leaves, checked above"));
        Ok(subtree_of(&self.0[lo..hi]))
    }
}

/// The root of a complete subtree given its `2^k` leaf (or lower-level) hashes, in order.
pub fn subtree_of(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level.chunks_exact(2).map(|pair| node_hash(&pair[0], &pair[1])).collect();
    }
    level[0]
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
