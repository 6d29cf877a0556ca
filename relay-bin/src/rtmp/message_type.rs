//! RTMP message type ids (RTMP 1.0, 5.4, 6.2 and 7.1) and the class of messages read whole.

/// Protocol control: the sender's new chunk size.
pub const SET_CHUNK_SIZE: u8 = 1;
/// Protocol control: drop the partial message of a chunk stream.
pub const ABORT: u8 = 2;
/// Protocol control: bytes received so far.
pub const ACKNOWLEDGEMENT: u8 = 3;
/// User control event (stream begin, ping, buffer length...).
pub const USER_CONTROL: u8 = 4;
/// Protocol control: how many bytes the peer may receive between acknowledgements.
pub const WINDOW_ACK_SIZE: u8 = 5;
/// Protocol control: the sender's output bandwidth limit.
pub const SET_PEER_BANDWIDTH: u8 = 6;
/// Audio data (an FLV audio tag body).
pub const AUDIO: u8 = 8;
/// Video data (an FLV video tag body).
pub const VIDEO: u8 = 9;
/// AMF3 data message (rml_rtmp reads it as AMF0).
pub const AMF3_DATA: u8 = 15;
/// AMF3 command (a format byte, then AMF0 in practice).
pub const AMF3_COMMAND: u8 = 17;
/// AMF0 data message (`@setDataFrame`, `onMetaData`...).
pub const AMF0_DATA: u8 = 18;
/// AMF0 shared object message.
pub const AMF0_SHARED_OBJECT: u8 = 19;
/// AMF0 command (`connect`, `_result`, `onStatus`...).
pub const AMF0_COMMAND: u8 = 20;

/// Protocol control (types 1 to 6) and AMF messages (15, 17, 18, 19, 20): small messages their receiver
/// reads whole, so they get the command size limit rather than the media one.
pub fn is_control_or_amf(type_id: u8) -> bool {
    matches!(
        type_id,
        SET_CHUNK_SIZE
            ..=SET_PEER_BANDWIDTH | AMF3_DATA | AMF3_COMMAND | AMF0_DATA | AMF0_SHARED_OBJECT | AMF0_COMMAND
    )
}
