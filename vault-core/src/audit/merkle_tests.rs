//! RFC 6962 reference vectors (Certificate Transparency's merkle_tree_test: the eight leaves
//! below, the root of every prefix, and consistency and inclusion proofs), then properties over
//! random trees: every proof the log makes verifies, and no altered one does.

use super::*;
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn h(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

/// A tree size or index as a position in memory.
fn ix(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

const LEAVES: [&str; 8] = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference() -> Leaves {
    Leaves(LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect())
}

#[test]
fn the_empty_tree_and_every_prefix_of_the_reference_tree_have_the_reference_root() {
    assert_eq!(empty_root(), h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    let tree = reference();
    for (n, root) in ROOTS.iter().enumerate() {
        assert_eq!(tree_hash(n as u64 + 1, &tree).unwrap(), h(root), "size {}", n + 1);
    }
}

#[test]
fn the_reference_consistency_proofs_are_made_and_verify() {
    let tree = reference();
    let cases: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 5, &["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e", "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    ];
    for (old, new, expected) in cases {
        let proof = consistency_proof(old, new, &tree).unwrap();
        assert_eq!(proof, expected.iter().map(|x| h(x)).collect::<Vec<_>>(), "{old} -> {new}");
        verify_consistency(old, &h(ROOTS[ix(old) - 1]), new, &h(ROOTS[ix(new) - 1]), &proof).unwrap();
    }
}

#[test]
fn the_reference_inclusion_proofs_are_made_and_verify() {
    let tree = reference();
    let cases: [(u64, u64, &[&str]); 3] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, size, expected) in cases {
        let proof = inclusion_proof(index, size, &tree).unwrap();
        assert_eq!(proof, expected.iter().map(|x| h(x)).collect::<Vec<_>>(), "{index} in {size}");
        verify_inclusion(index, size, &tree.0[ix(index)], &h(ROOTS[ix(size) - 1]), &proof).unwrap();
    }
}

#[test]
fn a_rewound_or_forked_log_fails_its_consistency_check_by_name() {
    let tree = reference();
    let proof = consistency_proof(3, 7, &tree).unwrap();
    let (r3, r7) = (h(ROOTS[2]), h(ROOTS[6]));
    verify_consistency(3, &r3, 7, &r7, &proof).unwrap();
    // A fork: the same size with another root.
    let err = verify_consistency(7, &r7, 7, &h(ROOTS[5]), &[]).unwrap_err();
    assert!(err.to_string().contains("audit log not consistent") && err.to_string().contains("forked"), "{err}");
    // Rewound: shrinking is never consistent.
    assert!(verify_consistency(7, &r7, 3, &r3, &proof).is_err());
    // A rewritten past: the older root the pusher holds is not what the proof leads to.
    let err = verify_consistency(3, &h(ROOTS[1]), 7, &r7, &proof).unwrap_err();
    assert!(err.to_string().contains("rewritten"), "{err}");
    // Every hash of the proof matters, and so does its length.
    for i in 0..proof.len() {
        let mut bad = proof.clone();
        bad[i][0] ^= 1;
        assert!(verify_consistency(3, &r3, 7, &r7, &bad).is_err(), "hash {i}");
    }
    assert!(verify_consistency(3, &r3, 7, &r7, &proof[..proof.len() - 1]).is_err());
    let mut longer = proof.clone();
    longer.push(proof[0]);
    assert!(verify_consistency(3, &r3, 7, &r7, &longer).is_err());
    assert!(verify_consistency(3, &r3, 7, &r7, &vec![proof[0]; MAX_PROOF_HASHES + 1]).is_err());
}

proptest! {
    #[test]
    fn every_proof_the_log_makes_verifies_and_a_flipped_bit_does_not(size in 1u64..300, a in 0u64..300, b in 0u64..300, bit in 0usize..256) {
        let tree = Leaves((0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect());
        let (old, index) = (a % size + 1, b % size);
        let roots: Vec<Hash> = [old, size].iter().map(|n| tree_hash(*n, &tree).unwrap()).collect();
        let proof = consistency_proof(old, size, &tree).unwrap();
        prop_assert!(verify_consistency(old, &roots[0], size, &roots[1], &proof).is_ok());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            bad[bit % proof.len()][bit / 8 % 32] ^= 1 << (bit % 8);
            prop_assert!(verify_consistency(old, &roots[0], size, &roots[1], &bad).is_err());
        }
        let path = inclusion_proof(index, size, &tree).unwrap();
        prop_assert!(verify_inclusion(index, size, &tree.0[ix(index)], &roots[1], &path).is_ok());
        prop_assert!(verify_inclusion((index + 1) % size, size, &tree.0[ix(index)], &roots[1], &path).is_err() || size == 1 || tree.0[ix((index + 1) % size)] == tree.0[ix(index)]);
        // The tree of `old` entries, computed from scratch, is the prefix's root.
        let prefix = Leaves(tree.0[..ix(old)].to_vec());
        prop_assert_eq!(tree_hash(old, &prefix).unwrap(), roots[0]);
    }
}
