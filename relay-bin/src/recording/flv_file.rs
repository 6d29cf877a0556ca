//! [`FlvFile`]: one recording file, FLV, written tag by tag. FLV needs no index: every tag written is
//! playable, so a file cut short by a crash or SIGKILL opens in any player up to its last whole tag, and a
//! finished one is synced to disk before the next begins.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::egress::http_flv::FLV_FILE_HEADER;
use crate::media::{Frame, Track};

/// An FLV file being written.
#[derive(Debug)]
pub struct FlvFile {
    path: PathBuf,
    file: File,
    /// Bytes written.
    bytes: u64,
    /// The dts that becomes the file's timestamp 0.
    base_dts: Option<u64>,
    /// The newest timestamp written (ms from the file's start).
    last_ms: u64,
    scratch: Vec<u8>,
}

impl FlvFile {
    /// Creates `path` (never overwriting one that exists) and writes the FLV header.
    pub fn create(path: &Path) -> io::Result<FlvFile> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(&FLV_FILE_HEADER)?;
        Ok(FlvFile {
            path: path.to_path_buf(),
            file,
            bytes: FLV_FILE_HEADER.len() as u64,
            base_dts: None,
            last_ms: 0,
            scratch: Vec::with_capacity(64 << 10),
        })
    }

    /// Appends `frame` as one tag, its timestamp counted from the file's first media frame (metadata and
    /// sequence headers at 0), in one write.
    pub fn write(&mut self, frame: &Frame) -> io::Result<()> {
        let timestamp = if frame.kind.is_essential() || frame.track == Track::Data {
            0
        } else {
            let base = *self.base_dts.get_or_insert(frame.dts_ms);
            frame.dts_ms.saturating_sub(base)
        };
        self.last_ms = self.last_ms.max(timestamp);
        let ts = timestamp as u32;
        let size = frame.body.len().min(0xFF_FFFF) as u32;
        let tag = &mut self.scratch;
        tag.clear();
        tag.push(frame.track.message_type());
        tag.extend_from_slice(&size.to_be_bytes()[1..]);
        tag.extend_from_slice(&(ts & 0xFF_FFFF).to_be_bytes()[1..]);
        tag.push((ts >> 24) as u8);
        tag.extend_from_slice(&[0, 0, 0]);
        tag.extend_from_slice(&frame.body[..size as usize]);
        tag.extend_from_slice(&(11 + size).to_be_bytes());
        self.file.write_all(tag)?;
        self.bytes += tag.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The file's media time at a frame of decode time `dts_ms` (its timestamp if it were written now).
    pub fn media_time_at(&self, dts_ms: u64) -> u64 {
        self.base_dts.map_or(0, |base| dts_ms.saturating_sub(base))
    }

    /// Media time written so far, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.last_ms
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the file to disk (the file is whole already: this makes it durable).
    pub fn finish(self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        Ok(self.path)
    }
}
