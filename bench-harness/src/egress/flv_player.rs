//! One lightweight HTTP-FLV player: `GET /APP/STREAM.flv`, then read the endless FLV body without decoding
//! it, measuring what a viewer would see exactly as the RTMP player does ([`crate::fanout::measure`]: time to
//! first keyframe, lag of each stamped frame at its arrival and at its read, missed frames).
//!
//! The body is HTTP/1.1 chunked ([`ChunkedDecoder`]) or, from an HTTP/1.0 server, the bytes up to the close;
//! the FLV inside is read by [`FlvStreamReader`], which keeps only each tag's first bytes. A player costs one
//! task, one 16 KiB read buffer and the two small decoders; it takes its shared lock once per socket read that
//! completed a stamped frame.

use super::chunked::ChunkedDecoder;
use super::flv_stream::{FlvStreamReader, TagPrefix};
use super::http_get::{self, MAX_HEAD_BYTES};
use crate::fanout::arrival::StampedReader;
use crate::fanout::clock;
use crate::fanout::flv::{TAG_AUDIO, TAG_VIDEO};
use crate::fanout::measure::{At, FrameMeter, Phase, PlayerShared};
use crate::fanout::ramp::SpawnPlayer;
use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Where to play from.
#[derive(Debug, Clone)]
pub struct FlvPlayerConfig {
    /// The server's HTTP address.
    pub addr: SocketAddr,
    /// The stream's path: `/APP/STREAM.flv`.
    pub path: String,
    /// How long connect, request and the response head may take together.
    pub setup_timeout: Duration,
}

/// How the ramp starts HTTP-FLV players of `config`'s stream.
pub fn spawner(config: FlvPlayerConfig) -> Box<SpawnPlayer> {
    let config = Arc::new(config);
    Box::new(move |rt, shared, delay| {
        rt.spawn(run(config.clone(), shared, delay));
    })
}

/// Runs one player, after `start_delay`, until its connection ends (or the runtime drops it), recording why
/// it ended.
pub async fn run(config: Arc<FlvPlayerConfig>, shared: Arc<PlayerShared>, start_delay: Duration) {
    tokio::time::sleep(start_delay).await;
    let reason = match play(&config, &shared).await {
        Ok(()) => "the server ended the response".to_string(),
        Err(e) => format!("{e:#}"),
    };
    shared.lock().phase = Phase::Ended(reason);
}

/// What the body's FLV tags are read into.
struct Body {
    chunked: Option<ChunkedDecoder>,
    flv: FlvStreamReader,
    meter: FrameMeter,
}

impl Body {
    /// Reads `bytes` of the response body (arrived and read `at`); whether the body ended.
    fn feed(&mut self, bytes: &[u8], shared: &PlayerShared, at: At) -> Result<bool> {
        let Body { chunked, flv, meter } = self;
        let mut on_tag = |tag: &TagPrefix<'_>| match tag.tag_type {
            TAG_VIDEO => meter.on_video(shared, tag.prefix, at),
            TAG_AUDIO => {
                shared.audio_messages.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        };
        let ended = match chunked {
            Some(decoder) => decoder.feed(bytes, |data| flv.feed(data, &mut on_tag))?,
            None => {
                flv.feed(bytes, &mut on_tag)?;
                false
            }
        };
        meter.flush(shared);
        Ok(ended)
    }
}

async fn play(config: &FlvPlayerConfig, shared: &PlayerShared) -> Result<()> {
    let connect_start = Instant::now();
    let setup_deadline = tokio::time::Instant::from_std(connect_start + config.setup_timeout);
    let mut sock = tokio::time::timeout_at(setup_deadline, TcpStream::connect(config.addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))?
        .with_context(|| format!("connecting to {}", config.addr))?;
    sock.set_nodelay(true).context("TCP_NODELAY")?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: popline-bench\r\nAccept: */*\r\n\r\n",
        config.path, config.addr
    );
    sock.write_all(request.as_bytes())
        .await
        .context("sending the request")?;
    let mut meter = FrameMeter::new(connect_start);
    meter.play_requested(clock::now_us());

    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut head_buf: Vec<u8> = Vec::new();
    let head = loop {
        let n = tokio::time::timeout_at(setup_deadline, sock.read(&mut buf))
            .await
            .map_err(|_| anyhow!("no response head in time"))?
            .context("reading the response head")?;
        if n == 0 {
            bail!("the server closed the connection before answering");
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
        head_buf.extend_from_slice(&buf[..n]);
        if let Some(head) = http_get::parse_head(&head_buf)? {
            break head;
        }
        if head_buf.len() > MAX_HEAD_BYTES {
            bail!("a response head longer than {MAX_HEAD_BYTES} bytes");
        }
    };
    let mut leftover = head_buf.split_off(head.len);
    if head.status != 200 {
        // The reason is the body's first line: read until it is in (briefly; the body is short).
        while !leftover.contains(&b'\n') && leftover.len() < 512 {
            match tokio::time::timeout(Duration::from_millis(500), sock.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => leftover.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let why = String::from_utf8_lossy(&leftover);
        bail!(
            "HTTP {} {}: {}",
            head.status,
            head.reason,
            why.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
        );
    }
    shared.lock().phase = Phase::Playing;
    let mut body = Body {
        chunked: head.chunked.then(ChunkedDecoder::new),
        flv: FlvStreamReader::new(),
        meter,
    };
    if body.feed(&leftover, shared, At::read_at(clock::now_us()))? {
        return Ok(());
    }
    let mut stamped = StampedReader::new(&sock);
    loop {
        let got = stamped.read(&sock, &mut buf).await.context("reading")?;
        let n = got.bytes;
        if n == 0 {
            return if body.chunked.is_some() {
                Err(anyhow!(
                    "the server closed the connection inside the chunked body"
                ))
            } else {
                Ok(())
            };
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if body.feed(&buf[..n], shared, got.at())? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::sei::{write_sei_nal, Stamp, SEI_NAL_LEN};
    use tokio::net::TcpListener;

    /// One FLV tag as an HTTP chunk.
    fn chunk(tag_type: u8, body: &[u8]) -> Vec<u8> {
        let mut tag = vec![tag_type];
        tag.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        tag.extend_from_slice(&[0; 7]);
        tag.extend_from_slice(body);
        tag.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        let mut c = format!("{:x}\r\n", tag.len()).into_bytes();
        c.extend(tag);
        c.extend_from_slice(b"\r\n");
        c
    }

    fn video(key: bool, seq: u32) -> Vec<u8> {
        let mut f = vec![if key { 0x17 } else { 0x27 }, 0x01, 0, 0, 0];
        f.extend_from_slice(&(SEI_NAL_LEN as u32).to_be_bytes());
        let send_us = clock::now_us();
        write_sei_nal(&mut f, Stamp { send_us, seq });
        f.extend_from_slice(&[0, 0, 0, 200, 0x65]);
        f.resize(f.len() + 199, 0xa5);
        f
    }

    #[tokio::test(flavor = "current_thread")]
    async fn plays_a_chunked_flv_response_to_its_end() {
        clock::epoch();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let n = s.read(&mut request).await.unwrap();
            let mut out =
                b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\n\
                            d\r\nFLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00\r\n"
                    .to_vec();
            out.extend(chunk(9, &[0x17, 0, 0, 0, 0, 1, 2]));
            out.extend(chunk(8, &[0xaf, 0x01, 7]));
            for (i, seq) in [0u32, 1, 3].into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                out.extend(chunk(9, &video(i == 0, seq)));
                s.write_all(&out).await.unwrap();
                out.clear();
            }
            s.write_all(b"0\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let config = FlvPlayerConfig {
            addr,
            path: "/live/s.flv".into(),
            setup_timeout: Duration::from_secs(5),
        };
        let shared = PlayerShared::new();
        play(&config, &shared).await.unwrap();
        assert!(server.await.unwrap().starts_with("GET /live/s.flv HTTP/1.1\r\n"));
        let st = shared.lock();
        assert_eq!(st.phase, Phase::Playing);
        assert!(st.ttff_us.is_some());
        assert_eq!(st.lags_us.len(), 3);
        assert_eq!(st.read_lags_us.len(), 3);
        assert!(
            st.lags_us.iter().zip(&st.read_lags_us).all(|(a, r)| a <= r),
            "a frame arrives no later than it is read: {:?} {:?}",
            st.lags_us,
            st.read_lags_us
        );
        assert_eq!(st.missed_frames, 1, "frame 2 never came");
        drop(st);
        assert_eq!(shared.video_messages.load(Ordering::Relaxed), 4);
        assert_eq!(shared.audio_messages.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_error_answer_ends_the_player_with_its_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let _ = s.read(&mut request).await.unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\n\r\nno such stream: live/none\n")
                .await
                .unwrap();
        });
        let config = FlvPlayerConfig {
            addr,
            path: "/live/none.flv".into(),
            setup_timeout: Duration::from_secs(5),
        };
        let err = play(&config, &PlayerShared::new()).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "HTTP 404 Not Found: no such stream: live/none"
        );
    }
}
