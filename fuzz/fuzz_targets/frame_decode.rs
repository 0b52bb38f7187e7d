//! Arbitrary bytes as push-protocol frames from either side: refuse or decode, never panic;
//! what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::protocol::{frame_len, ClientFrame, VaultFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ClientFrame::decode(data) {
        assert_eq!(&frame.encode()[4..], data);
    }
    if let Ok(frame) = VaultFrame::decode(data) {
        let _ = frame.encode();
    }
    if let Some(prefix) = data.get(..4) {
        let _ = frame_len(prefix.try_into().unwrap());
    }
});
