//! The client side of RTMP that players need and rml_rtmp gives us sans-IO: the handshake, the commands a
//! player sends (serialized with rml_rtmp's `ChunkSerializer`), and decoding the commands a server answers.
//!
//! The publisher uses rml_rtmp's whole `ClientSession`; players use only these pieces, so that once media
//! flows a player does nothing but [`super::chunk_reader`] and an occasional acknowledgement.

use anyhow::{anyhow, bail, Context, Result};
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{RtmpMessage, UserControlEventType};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Transaction id of a player's `connect`.
pub const TX_CONNECT: f64 = 1.0;
/// Transaction id of a player's `createStream`.
pub const TX_CREATE_STREAM: f64 = 2.0;
/// Buffer length a player announces before `play`, in milliseconds (what Flash-era players send).
const PLAYER_BUFFER_MS: u32 = 1000;

/// The client handshake without IO: C0+C1 to send first, then one [`ClientHandshake::step`] per read.
pub struct ClientHandshake(Handshake);

impl ClientHandshake {
    /// Starts the handshake; returns it and the C0+C1 bytes to send.
    pub fn start() -> Result<(ClientHandshake, Vec<u8>)> {
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|e| anyhow!("handshake: {e:?}"))?;
        Ok((ClientHandshake(hs), p0p1))
    }

    /// Feeds one read (empty: the server closed). Returns the bytes to send back and, once the handshake is
    /// done, the bytes the server sent after it.
    pub fn step(&mut self, read: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        if read.is_empty() {
            bail!("the server closed the connection during the handshake");
        }
        match self
            .0
            .process_bytes(read)
            .map_err(|e| anyhow!("handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => Ok((response_bytes, None)),
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => Ok((response_bytes, Some(remaining_bytes))),
        }
    }
}

/// Runs the client handshake over a blocking socket; returns the bytes the server sent after it.
pub fn handshake_blocking(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let (mut hs, p0p1) = ClientHandshake::start()?;
    stream.write_all(&p0p1).context("sending C0+C1")?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).context("reading S0+S1+S2")?;
        let (reply, done) = hs.step(&buf[..n])?;
        stream.write_all(&reply).context("sending the handshake")?;
        if let Some(remaining) = done {
            return Ok(remaining);
        }
    }
}

/// Runs the client handshake over a tokio socket; returns the bytes the server sent after it.
pub async fn handshake_async(stream: &mut tokio::net::TcpStream) -> Result<Vec<u8>> {
    let (mut hs, p0p1) = ClientHandshake::start()?;
    stream.write_all(&p0p1).await.context("sending C0+C1")?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.context("reading S0+S1+S2")?;
        let (reply, done) = hs.step(&buf[..n])?;
        stream.write_all(&reply).await.context("sending the handshake")?;
        if let Some(remaining) = done {
            return Ok(remaining);
        }
    }
}

/// Serializes what a player sends, appending the chunks to an output buffer.
pub struct CommandWriter {
    serializer: ChunkSerializer,
}

impl Default for CommandWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandWriter {
    /// A writer at the start of the chunk stream (128-byte chunks: commands are small).
    pub fn new() -> Self {
        Self {
            serializer: ChunkSerializer::new(),
        }
    }

    fn push(&mut self, out: &mut Vec<u8>, message: RtmpMessage, stream_id: u32) -> Result<()> {
        let payload = message
            .into_message_payload(RtmpTimestamp::new(0), stream_id)
            .map_err(|e| anyhow!("serializing a message: {e:?}"))?;
        let packet = self
            .serializer
            .serialize(&payload, false, false)
            .map_err(|e| anyhow!("serializing a chunk: {e:?}"))?;
        out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    /// `connect` to `app` (transaction [`TX_CONNECT`]).
    pub fn connect(&mut self, out: &mut Vec<u8>, app: &str, tc_url: &str) -> Result<()> {
        let mut properties = HashMap::new();
        properties.insert("app".to_string(), Amf0Value::Utf8String(app.into()));
        properties.insert(
            "flashVer".to_string(),
            Amf0Value::Utf8String("LNX 9,0,124,2".into()),
        );
        properties.insert("tcUrl".to_string(), Amf0Value::Utf8String(tc_url.into()));
        properties.insert("fpad".to_string(), Amf0Value::Boolean(false));
        properties.insert("capabilities".to_string(), Amf0Value::Number(15.0));
        properties.insert("audioCodecs".to_string(), Amf0Value::Number(4071.0));
        properties.insert("videoCodecs".to_string(), Amf0Value::Number(252.0));
        properties.insert("videoFunction".to_string(), Amf0Value::Number(1.0));
        let message = RtmpMessage::Amf0Command {
            command_name: "connect".into(),
            transaction_id: TX_CONNECT,
            command_object: Amf0Value::Object(properties),
            additional_arguments: vec![],
        };
        self.push(out, message, 0)
    }

    /// `createStream` (transaction [`TX_CREATE_STREAM`]).
    pub fn create_stream(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let message = RtmpMessage::Amf0Command {
            command_name: "createStream".into(),
            transaction_id: TX_CREATE_STREAM,
            command_object: Amf0Value::Null,
            additional_arguments: vec![],
        };
        self.push(out, message, 0)
    }

    /// The buffer length, then `play` of `stream_key` (live, from now) on message stream `stream_id`.
    pub fn play(&mut self, out: &mut Vec<u8>, stream_id: u32, stream_key: &str) -> Result<()> {
        let buffer = RtmpMessage::UserControl {
            event_type: UserControlEventType::SetBufferLength,
            stream_id: Some(stream_id),
            buffer_length: Some(PLAYER_BUFFER_MS),
            timestamp: None,
        };
        self.push(out, buffer, 0)?;
        let message = RtmpMessage::Amf0Command {
            command_name: "play".into(),
            transaction_id: 0.0,
            command_object: Amf0Value::Null,
            additional_arguments: vec![
                Amf0Value::Utf8String(stream_key.into()),
                Amf0Value::Number(-1000.0),
            ],
        };
        self.push(out, message, stream_id)
    }

    /// An acknowledgement of `total_bytes` received (the sequence number wraps at 2^32, RTMP 1.0 5.4.3).
    pub fn acknowledgement(&mut self, out: &mut Vec<u8>, total_bytes: u64) -> Result<()> {
        let message = RtmpMessage::Acknowledgement {
            sequence_number: total_bytes as u32,
        };
        self.push(out, message, 0)
    }

    /// The answer to a ping request carrying `timestamp`.
    pub fn ping_response(&mut self, out: &mut Vec<u8>, timestamp: u32) -> Result<()> {
        let message = RtmpMessage::UserControl {
            event_type: UserControlEventType::PingResponse,
            stream_id: None,
            buffer_length: None,
            timestamp: Some(RtmpTimestamp::new(timestamp)),
        };
        self.push(out, message, 0)
    }
}

/// A command (AMF0 type 20, or AMF3 type 17 which carries AMF0 after a format byte) from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `_result`, `_error`, `onStatus`...
    pub name: String,
    /// The transaction it answers (0 for notifications).
    pub transaction_id: f64,
    /// The command object and the arguments after it.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// Decodes a command message's payload.
    pub fn parse(type_id: u8, payload: &[u8]) -> Result<Self> {
        let body = if type_id == relay::rtmp::message_type::AMF3_COMMAND {
            payload.get(1..).unwrap_or(&[])
        } else {
            payload
        };
        let mut values = rml_amf0::deserialize(&mut std::io::Cursor::new(body))
            .map_err(|e| anyhow!("bad AMF0 in a command: {e:?}"))?
            .into_iter();
        let name = match values.next() {
            Some(Amf0Value::Utf8String(s)) => s,
            other => bail!("a command without a name: {other:?}"),
        };
        let transaction_id = match values.next() {
            Some(Amf0Value::Number(n)) => n,
            _ => 0.0,
        };
        Ok(Self {
            name,
            transaction_id,
            args: values.collect(),
        })
    }

    /// The first number among the arguments (`createStream`'s stream id).
    pub fn first_number(&self) -> Option<f64> {
        self.args.iter().find_map(|v| match v {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        })
    }

    /// A property (`code`, `description`) of the first object among the arguments (an info object).
    pub fn info(&self, key: &str) -> Option<&str> {
        self.args.iter().find_map(|v| match v {
            Amf0Value::Object(map) => match map.get(key) {
                Some(Amf0Value::Utf8String(s)) => Some(s.as_str()),
                _ => None,
            },
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_decode_from_what_the_serializer_writes() {
        let mut info = HashMap::new();
        info.insert(
            "code".to_string(),
            Amf0Value::Utf8String("NetStream.Play.Start".into()),
        );
        let values = vec![
            Amf0Value::Utf8String("onStatus".into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::Object(info),
        ];
        let bytes = rml_amf0::serialize(&values).unwrap();
        let cmd = Command::parse(20, &bytes).unwrap();
        assert_eq!(cmd.name, "onStatus");
        assert_eq!(cmd.info("code"), Some("NetStream.Play.Start"));
        let result = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("_result".into()),
            Amf0Value::Number(TX_CREATE_STREAM),
            Amf0Value::Null,
            Amf0Value::Number(1.0),
        ])
        .unwrap();
        let cmd = Command::parse(20, &result).unwrap();
        assert_eq!(
            (cmd.transaction_id, cmd.first_number()),
            (TX_CREATE_STREAM, Some(1.0))
        );
        assert!(Command::parse(20, &[0xff, 0x00]).is_err());
    }
}
