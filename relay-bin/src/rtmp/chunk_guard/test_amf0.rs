//! AMF0 values and rml_rtmp commands for the guard's tests.

use crate::rtmp::chunk_guard::amf0_walk::{AMF_NUMBER, AMF_OBJECT, AMF_OBJECT_END, AMF_STRING};
use rml_amf0::Amf0Value;
use rml_rtmp::messages::RtmpMessage;
use std::collections::HashMap;

/// Appends an AMF0 string.
pub(super) fn amf_string(out: &mut Vec<u8>, text: &str) {
    out.push(AMF_STRING);
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Appends an AMF0 number.
pub(super) fn amf_number(out: &mut Vec<u8>, value: f64) {
    out.push(AMF_NUMBER);
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends an object property's name (its value comes next).
pub(super) fn amf_property(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// Appends an object's end (empty name, 0x09).
pub(super) fn amf_object_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, AMF_OBJECT_END]);
}

/// `depth` objects, each the value of property "a" of the one around it.
pub(super) fn nested_objects(out: &mut Vec<u8>, depth: usize) {
    for level in 0..depth {
        if level > 0 {
            amf_property(out, "a");
        }
        out.push(AMF_OBJECT);
    }
    for _ in 0..depth {
        amf_object_end(out);
    }
}

/// The `connect` to `app` ffmpeg sends.
pub(super) fn connect_command(app: &str) -> RtmpMessage {
    let mut properties = HashMap::new();
    properties.insert("app".to_string(), Amf0Value::Utf8String(app.to_string()));
    properties.insert(
        "type".to_string(),
        Amf0Value::Utf8String("nonprivate".to_string()),
    );
    properties.insert(
        "flashVer".to_string(),
        Amf0Value::Utf8String("FMLE/3.0 (compatible; Lavf61)".to_string()),
    );
    properties.insert(
        "tcUrl".to_string(),
        Amf0Value::Utf8String(format!("rtmp://pop.example/{app}")),
    );
    RtmpMessage::Amf0Command {
        command_name: "connect".to_string(),
        transaction_id: 1.0,
        command_object: Amf0Value::Object(properties),
        additional_arguments: Vec::new(),
    }
}

/// A command with a null command object and `arguments`.
pub(super) fn command(name: &str, transaction_id: f64, arguments: Vec<Amf0Value>) -> RtmpMessage {
    RtmpMessage::Amf0Command {
        command_name: name.to_string(),
        transaction_id,
        command_object: Amf0Value::Null,
        additional_arguments: arguments,
    }
}
