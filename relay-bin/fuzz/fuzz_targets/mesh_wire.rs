//! The mesh's wire on hostile bytes: a peer's control message and a carried frame's header. Never a panic;
//! what decodes re-encodes to a message that decodes to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relay::mesh::wire::{Control, MediaHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Control::decode(data) {
        let again = Control::decode(&msg.encode());
        assert_eq!(again.as_ref(), Ok(&msg));
    }
    let payload = Bytes::copy_from_slice(data);
    if let Ok((header, body)) = MediaHeader::decode(&payload) {
        assert_eq!(MediaHeader::decode(&header.encode_with(&body)), Ok((header, body)));
    }
});
