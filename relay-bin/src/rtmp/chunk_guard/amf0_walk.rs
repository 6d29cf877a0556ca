//! The AMF0 walk: checks a command or data message's AMF0 values without building them, as deep as a limit
//! allows, where rml_amf0 would recurse without one (a deeply nested object overflows its stack).

use crate::rtmp::byte_reader::Reader;
use crate::rtmp::chunk_guard::error::GuardError;

// AMF0 type markers (AMF0 spec, 2.1).
pub(super) const AMF_NUMBER: u8 = 0x00;
pub(super) const AMF_BOOLEAN: u8 = 0x01;
pub(super) const AMF_STRING: u8 = 0x02;
pub(super) const AMF_OBJECT: u8 = 0x03;
pub(super) const AMF_NULL: u8 = 0x05;
pub(super) const AMF_UNDEFINED: u8 = 0x06;
pub(super) const AMF_REFERENCE: u8 = 0x07;
pub(super) const AMF_ECMA_ARRAY: u8 = 0x08;
pub(super) const AMF_OBJECT_END: u8 = 0x09;
pub(super) const AMF_STRICT_ARRAY: u8 = 0x0A;
pub(super) const AMF_DATE: u8 = 0x0B;
pub(super) const AMF_LONG_STRING: u8 = 0x0C;
pub(super) const AMF_XML_DOCUMENT: u8 = 0x0F;
pub(super) const AMF_TYPED_OBJECT: u8 = 0x10;
pub(super) const AMF_AVMPLUS: u8 = 0x11;

/// The first value of the data message rml_rtmp indexes into.
pub(super) const SET_DATA_FRAME: &[u8] = b"@setDataFrame";

/// What the AMF0 walk learned about a message's top-level values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AmfSummary {
    /// Top-level values, counted as rml_amf0 counts them (it stops at the end or at a top-level 0x09).
    pub(super) values: usize,
    /// The first value is the string `@setDataFrame`.
    pub(super) first_is_set_data_frame: bool,
}

/// An open container in the AMF0 walk.
enum Container {
    /// An object, ECMA array or typed object: properties until an empty name and 0x09.
    Object,
    /// A strict array with this many values still to come.
    StrictArray { left: u32 },
}

/// Walks AMF0 values from `start` to the end of `data` without recursion: checks every length is inside
/// `data`, every marker is known, and containers nest at most `max_depth` deep. Mirrors rml_amf0's parse
/// wherever that parse succeeds, so the depth seen here is the depth rml_amf0 would recurse to.
pub(super) fn check_amf0(data: &[u8], start: usize, max_depth: usize) -> Result<AmfSummary, GuardError> {
    let mut reader = Reader::new(data);
    if reader.skip(start).is_none() {
        return Err(malformed(0, "payload shorter than its prefix"));
    }
    let mut summary = AmfSummary {
        values: 0,
        first_is_set_data_frame: false,
    };
    let mut stack: Vec<Container> = Vec::new();
    loop {
        let marker = match stack.last_mut() {
            None => match reader.u8() {
                // rml_amf0 ends the value list at the end of the data or at a top-level object-end marker.
                None | Some(AMF_OBJECT_END) => return Ok(summary),
                Some(marker) => {
                    summary.values += 1;
                    marker
                }
            },
            Some(Container::Object) => {
                let at = reader.position();
                let name_len = reader
                    .be16()
                    .ok_or(malformed(at, "property name length past the end"))?;
                if name_len == 0 {
                    match reader.u8() {
                        Some(AMF_OBJECT_END) => {
                            stack.pop();
                            continue;
                        }
                        Some(_) => return Err(malformed(at, "empty property name without object end")),
                        None => return Err(malformed(at, "object end past the end")),
                    }
                }
                reader
                    .skip(usize::from(name_len))
                    .ok_or(malformed(at, "property name past the end"))?;
                let at = reader.position();
                match reader.u8() {
                    None => return Err(malformed(at, "property value past the end")),
                    Some(AMF_OBJECT_END) => {
                        return Err(malformed(at, "object end in place of a property value"))
                    }
                    Some(marker) => marker,
                }
            }
            Some(Container::StrictArray { left }) => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                let at = reader.position();
                match reader.u8() {
                    None => return Err(malformed(at, "strict array shorter than its count")),
                    Some(AMF_OBJECT_END) => {
                        return Err(malformed(at, "object end in place of an array value"))
                    }
                    Some(marker) => marker,
                }
            }
        };
        let at = reader.position().saturating_sub(1);
        let top_level = stack.is_empty();
        let past_end = || malformed(at, "value past the end of the message");
        match marker {
            AMF_NUMBER => reader.skip(8).ok_or_else(past_end)?,
            AMF_BOOLEAN => reader.skip(1).ok_or_else(past_end)?,
            AMF_STRING => {
                let text = reader
                    .be16()
                    .and_then(|len| reader.take(usize::from(len)))
                    .ok_or_else(past_end)?;
                if top_level && summary.values == 1 && text == SET_DATA_FRAME {
                    summary.first_is_set_data_frame = true;
                }
            }
            AMF_NULL | AMF_UNDEFINED => {}
            AMF_REFERENCE => reader.skip(2).ok_or_else(past_end)?,
            AMF_DATE => reader.skip(10).ok_or_else(past_end)?,
            AMF_LONG_STRING | AMF_XML_DOCUMENT => reader
                .be32()
                .and_then(|len| reader.skip(usize::try_from(len).ok()?))
                .ok_or_else(past_end)?,
            AMF_OBJECT => open(&mut stack, Container::Object, max_depth)?,
            AMF_ECMA_ARRAY => {
                // The count is advisory: rml_amf0 (and real encoders) end the array like an object.
                reader.skip(4).ok_or_else(past_end)?;
                open(&mut stack, Container::Object, max_depth)?;
            }
            AMF_TYPED_OBJECT => {
                reader
                    .be16()
                    .and_then(|len| reader.skip(usize::from(len)))
                    .ok_or_else(past_end)?;
                open(&mut stack, Container::Object, max_depth)?;
            }
            AMF_STRICT_ARRAY => {
                let left = reader.be32().ok_or_else(past_end)?;
                open(&mut stack, Container::StrictArray { left }, max_depth)?;
            }
            AMF_AVMPLUS => return Err(GuardError::Amf3Unsupported { offset: at }),
            _ => return Err(malformed(at, "unknown marker")),
        }
    }
}

/// Opens a container, refusing one nested deeper than `max_depth`.
fn open(stack: &mut Vec<Container>, container: Container, max_depth: usize) -> Result<(), GuardError> {
    if stack.len() >= max_depth {
        return Err(GuardError::AmfTooDeep {
            depth: stack.len() + 1,
            limit: max_depth,
        });
    }
    stack.push(container);
    Ok(())
}

fn malformed(offset: usize, reason: &'static str) -> GuardError {
    GuardError::MalformedAmf { offset, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk_guard::test_amf0::{amf_number, amf_object_end, amf_property, amf_string};

    #[test]
    fn a_million_levels_are_walked_without_recursion() {
        // A recursive walk would overflow a test thread's 2 MiB stack long before this depth.
        let mut payload = Vec::new();
        for _ in 0..1_000_000 {
            payload.extend_from_slice(&[AMF_STRICT_ARRAY, 0, 0, 0, 1]);
        }
        payload.push(AMF_NULL);
        let summary = check_amf0(&payload, 0, usize::MAX).unwrap();
        assert_eq!(summary.values, 1);
        assert_eq!(
            check_amf0(&payload, 0, 16),
            Err(GuardError::AmfTooDeep { depth: 17, limit: 16 })
        );
    }

    #[test]
    fn every_amf0_marker_is_walked() {
        let mut payload = Vec::new();
        amf_number(&mut payload, 1.5);
        payload.extend_from_slice(&[AMF_BOOLEAN, 1, AMF_NULL, AMF_UNDEFINED, AMF_REFERENCE, 0, 1]);
        payload.extend_from_slice(&[AMF_DATE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[AMF_LONG_STRING, 0, 0, 0, 2, b'h', b'i']);
        payload.extend_from_slice(&[AMF_XML_DOCUMENT, 0, 0, 0, 1, b'<']);
        payload.extend_from_slice(&[AMF_ECMA_ARRAY, 0, 0, 0, 1]);
        amf_property(&mut payload, "k");
        amf_string(&mut payload, "v");
        amf_object_end(&mut payload);
        payload.extend_from_slice(&[AMF_STRICT_ARRAY, 0, 0, 0, 2, AMF_NULL, AMF_OBJECT]);
        amf_object_end(&mut payload);
        payload.extend_from_slice(&[AMF_TYPED_OBJECT, 0, 1, b'C']);
        amf_property(&mut payload, "x");
        amf_number(&mut payload, 2.0);
        amf_object_end(&mut payload);
        let summary = check_amf0(&payload, 0, 16).unwrap();
        assert_eq!(
            summary,
            AmfSummary {
                values: 11,
                first_is_set_data_frame: false
            }
        );
    }

    #[test]
    fn malformed_amf0_is_refused() {
        let malformed =
            |payload: &[u8]| matches!(check_amf0(payload, 0, 16), Err(GuardError::MalformedAmf { .. }));
        assert!(malformed(&[AMF_NUMBER, 0, 0]));
        assert!(malformed(&[AMF_STRING, 0, 5, b'a']));
        assert!(malformed(&[AMF_LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a']));
        assert!(malformed(&[AMF_OBJECT, 0, 1, b'a']));
        assert!(malformed(&[AMF_OBJECT, 0, 1, b'a', AMF_OBJECT_END]));
        assert!(malformed(&[AMF_OBJECT, 0, 0, AMF_NULL]));
        assert!(malformed(&[AMF_OBJECT]));
        assert!(malformed(&[AMF_STRICT_ARRAY, 0, 0, 0, 3, AMF_NULL]));
        assert!(malformed(&[AMF_STRICT_ARRAY, 0, 0, 0, 3, AMF_OBJECT_END]));
        assert!(malformed(&[0x04]));
        assert!(malformed(&[0x0D]));
        assert!(malformed(&[0xFF]));
        assert_eq!(
            check_amf0(&[AMF_NULL, AMF_AVMPLUS, 0x01], 0, 16),
            Err(GuardError::Amf3Unsupported { offset: 1 })
        );
        let error = check_amf0(&[AMF_NULL, AMF_STRING, 0, 9], 0, 16).unwrap_err();
        assert_eq!(
            error,
            GuardError::MalformedAmf {
                offset: 1,
                reason: "value past the end of the message"
            }
        );
    }

    #[test]
    fn top_level_object_end_stops_the_walk_as_in_rml() {
        let summary = check_amf0(&[AMF_NULL, AMF_OBJECT_END, 0xFF, 0xFF], 0, 16).unwrap();
        assert_eq!(summary.values, 1);
    }
}
