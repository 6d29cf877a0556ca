//! `popline snapshot-worker`: the child process that decodes keyframes for the node, and the framing of
//! what goes between them on its stdin and stdout.
//!
//! Request: `width: u32` (0: the picture's own), `quality: u8`, `len: u32`, then `len` bytes of one Annex-B
//! access unit. Answer: `status: u8` (0: a JPEG follows; 1: an error message follows), `len: u32`, then for a
//! JPEG `width: u32`, `height: u32` and the file, for an error UTF-8 text. All integers big-endian. The
//! worker serves one request at a time until its stdin closes; the node kills and replaces a worker that
//! dies, hangs or answers out of frame.

use std::io::{self, Read, Write};

use super::error::SnapshotError;
use super::picture::{jpeg_of, Jpeg};

/// Most bytes of an access unit the worker reads (a keyframe is checked against a lower bound before).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

/// Most bytes of an answer the node reads.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Encodes one request.
pub fn request(access_unit: &[u8], width: Option<u32>, quality: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(access_unit.len() + 9);
    out.extend_from_slice(&width.unwrap_or(0).to_be_bytes());
    out.push(quality);
    out.extend_from_slice(&(access_unit.len() as u32).to_be_bytes());
    out.extend_from_slice(access_unit);
    out
}

/// Encodes one answer.
pub fn answer(result: &Result<Jpeg, SnapshotError>) -> Vec<u8> {
    match result {
        Ok(jpeg) => {
            let mut out = Vec::with_capacity(jpeg.bytes.len() + 13);
            out.push(0);
            out.extend_from_slice(&((jpeg.bytes.len() + 8) as u32).to_be_bytes());
            out.extend_from_slice(&jpeg.width.to_be_bytes());
            out.extend_from_slice(&jpeg.height.to_be_bytes());
            out.extend_from_slice(&jpeg.bytes);
            out
        }
        Err(error) => {
            let text = error.to_string();
            let mut out = Vec::with_capacity(text.len() + 5);
            out.push(1);
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
            out
        }
    }
}

/// Reads the rest of an answer whose 5-byte head was `head`, from its payload: the JPEG, or the worker's
/// error (as [`SnapshotError::Decode`]). `Err(text)` when the answer is out of frame.
pub fn parse_answer(status: u8, payload: Vec<u8>) -> Result<Result<Jpeg, SnapshotError>, String> {
    match status {
        0 => {
            if payload.len() < 8 {
                return Err(format!("a {}-byte picture answer", payload.len()));
            }
            let width = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let height = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
            let bytes = bytes::Bytes::from(payload).slice(8..);
            Ok(Ok(Jpeg { bytes, width, height }))
        }
        1 => Ok(Err(SnapshotError::Decode(
            String::from_utf8_lossy(&payload)
                .trim_start_matches("the keyframe did not decode: ")
                .to_string(),
        ))),
        other => Err(format!("answer status {other}")),
    }
}

/// The worker's loop: serves requests from `input` on `output` until `input` ends. Returns an error when a
/// request is out of frame or the node is gone (the worker then exits; the node starts another).
pub fn serve(mut input: impl Read, mut output: impl Write) -> io::Result<()> {
    loop {
        let mut head = [0u8; 9];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let width = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let quality = head[4];
        let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
        if len > MAX_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a request of {len} bytes (at most {MAX_REQUEST_BYTES})"),
            ));
        }
        let mut access_unit = vec![0; len];
        input.read_exact(&mut access_unit)?;
        let result = jpeg_of(&access_unit, (width > 0).then_some(width), quality);
        output.write_all(&answer(&result))?;
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_answers_each_request_in_frame_and_ends_with_its_input() {
        let mut input = request(b"\x00\x00\x00\x01\x65garbage", Some(320), 80);
        input.extend(request(b"", None, 80));
        let mut output = Vec::new();
        serve(&input[..], &mut output).unwrap();
        let mut rest = &output[..];
        for _ in 0..2 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let parsed = parse_answer(rest[0], rest[5..5 + len].to_vec()).unwrap();
            assert!(matches!(parsed, Err(SnapshotError::Decode(_))), "{parsed:?}");
            rest = &rest[5 + len..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn hostile_request_sizes_end_the_worker_without_allocating() {
        let mut input = 0u32.to_be_bytes().to_vec();
        input.push(80);
        input.extend_from_slice(&u32::MAX.to_be_bytes());
        let error = serve(&input[..], Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn answers_round_trip() {
        let jpeg = Jpeg {
            bytes: bytes::Bytes::from_static(b"\xff\xd8jpeg"),
            width: 640,
            height: 360,
        };
        let encoded = answer(&Ok(jpeg.clone()));
        assert_eq!(parse_answer(encoded[0], encoded[5..].to_vec()), Ok(Ok(jpeg)));
        let encoded = answer(&Err(SnapshotError::Decode("bad slice".into())));
        assert_eq!(
            parse_answer(encoded[0], encoded[5..].to_vec()),
            Ok(Err(SnapshotError::Decode("bad slice".into())))
        );
        assert!(parse_answer(0, vec![1, 2]).is_err());
        assert!(parse_answer(7, vec![]).is_err());
    }
}
