//! Arbitrary bytes as relay messages between the session worker and the daemon (the daemon
//! treats the worker as hostile): refuse or decode, never panic; what decodes re-encodes to the
//! same bytes. The same bytes as a stream through the relay's frame reader: it never holds more
//! than one relay frame, whatever the prefix says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_core::push::protocol::{Filled, FrameReader};
use vault_core::push::relay::{FromWorker, ToWorker, MAX_RELAY_FRAME};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = FromWorker::decode(data) {
        assert_eq!(&message.encode().expect("a decoded message encodes")[4..], data);
    }
    if let Ok(message) = ToWorker::decode(data) {
        assert_eq!(&message.encode().expect("a decoded message encodes")[4..], data);
    }
    let Some((step, stream)) = data.split_first() else { return };
    let step = usize::from(*step % 64) + 1;
    let mut reader = FrameReader::with_limit(MAX_RELAY_FRAME);
    let mut pos = 0;
    while pos < stream.len() {
        let space = reader.unfilled();
        assert!(space.len() <= MAX_RELAY_FRAME);
        let n = space.len().min(step).min(stream.len() - pos);
        space[..n].copy_from_slice(&stream[pos..pos + n]);
        pos += n;
        match reader.filled(n) {
            Ok(Filled::Frame { body, .. }) => {
                let _ = FromWorker::decode(body);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
