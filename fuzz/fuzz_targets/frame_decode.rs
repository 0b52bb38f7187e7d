//! Arbitrary bytes as push-protocol frames from either side: refuse or decode, never panic;
//! what decodes re-encodes to the same bytes. The same bytes as a stream through the one
//! frame reader both sides use: it never holds more than a frame, whatever the prefix says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::push::protocol::{ClientFrame, Filled, FrameReader, VaultFrame, MAX_FRAME_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ClientFrame::decode(data) {
        assert_eq!(&frame.encode().expect("a decoded frame encodes")[4..], data);
    }
    if let Ok(frame) = VaultFrame::decode(data) {
        let _ = frame.encode();
    }
    // The first byte picks how the stream arrives: one byte at a time up to 64 at a time.
    let Some((step, stream)) = data.split_first() else { return };
    let step = usize::from(*step % 64) + 1;
    let mut reader = FrameReader::default();
    let mut pos = 0;
    while pos < stream.len() {
        let space = reader.unfilled();
        assert!(space.len() <= MAX_FRAME_BYTES);
        let n = space.len().min(step).min(stream.len() - pos);
        space[..n].copy_from_slice(&stream[pos..pos + n]);
        pos += n;
        match reader.filled(n) {
            Ok(Filled::Frame { body, wire_bytes }) => {
                assert_eq!(wire_bytes, body.len() + 4);
                let _ = ClientFrame::decode(body);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
