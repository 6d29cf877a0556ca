//! Snapshots of recordings: the files under `recording.path`, named by their path below it
//! (`APP/STREAM/STREAM-<UTC start>.flv`), and the keyframe at a time in one.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::access_unit::{Keyframe, MAX_KEYFRAME_BYTES};
use super::error::SnapshotError;

/// One recording, as `GET /api/v1/recordings` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordingInfo {
    /// Its path below the recording folder, `/`-separated: the `{name}` of its snapshot URL (with each `/`
    /// written `%2F`).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When it was last written (Unix ms).
    pub modified_unix_ms: u64,
}

/// Most recordings a listing returns (the newest).
pub const MAX_LISTED: usize = 10_000;

/// Every `.flv` file under `root` (three levels: app, stream, file), newest first, at most [`MAX_LISTED`].
pub fn list(root: &Path) -> std::io::Result<Vec<RecordingInfo>> {
    let mut found = Vec::new();
    for app in read_dirs(root)? {
        for stream in read_dirs(&app)? {
            for entry in std::fs::read_dir(&stream)?.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() || path.extension().is_none_or(|e| e != "flv") {
                    continue;
                }
                let Ok(relative) = path.strip_prefix(root) else {
                    continue;
                };
                let name = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let modified_unix_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                found.push(RecordingInfo {
                    name,
                    bytes: meta.len(),
                    modified_unix_ms,
                });
            }
        }
    }
    found.sort_by(|a, b| {
        b.modified_unix_ms
            .cmp(&a.modified_unix_ms)
            .then(a.name.cmp(&b.name))
    });
    found.truncate(MAX_LISTED);
    Ok(found)
}

fn read_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The file a recording's `name` means under `root`: relative, only plain components, ending in `.flv`.
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, SnapshotError> {
    let relative = Path::new(name);
    let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if name.is_empty() || !plain || relative.extension().is_none_or(|e| e != "flv") {
        return Err(SnapshotError::BadRequest(format!(
            "bad recording name {name:?}: want APP/STREAM/FILE.flv as GET /api/v1/recordings lists it"
        )));
    }
    let path = root.join(relative);
    if !path.is_file() {
        return Err(SnapshotError::NotFound(format!("no recording {name:?}")));
    }
    Ok(path)
}

/// The last keyframe at or before `at_ms` of media (counted from the file's first tag) in the FLV file at
/// `path` (the first keyframe when none is that early), with the video sequence header in force there
/// (empty for a codec without one). A file cut short (one being written, or left by
/// a crash) is read up to its last whole tag.
pub fn keyframe_at(path: &Path, at_ms: u64) -> Result<Keyframe, SnapshotError> {
    let file = File::open(path)
        .map_err(|e| SnapshotError::NotFound(format!("cannot read {}: {e}", path.display())))?;
    keyframe_in(file, at_ms)
}

/// [`keyframe_at`] over an FLV file's bytes (what the fuzz target drives).
pub fn keyframe_in<R: Read + Seek>(file: R, at_ms: u64) -> Result<Keyframe, SnapshotError> {
    // Tags are skipped within the buffer where they can be (`seek_relative`): a long recording is read
    // through once, not re-read per tag.
    let mut file = BufReader::with_capacity(64 << 10, file);
    let mut head = [0u8; 13];
    file.read_exact(&mut head)
        .map_err(|_| SnapshotError::Malformed("not an FLV file (shorter than its header)".into()))?;
    if &head[..3] != b"FLV" {
        return Err(SnapshotError::Malformed("not an FLV file".into()));
    }
    let data_offset = u64::from(u32::from_be_bytes([head[5], head[6], head[7], head[8]]));
    file.seek(SeekFrom::Start(data_offset.saturating_add(4)))
        .map_err(|e| SnapshotError::Malformed(format!("cannot seek to the first tag: {e}")))?;
    let mut first_ms: Option<u64> = None;
    let mut header = Bytes::new();
    let mut found: Option<Keyframe> = None;
    let mut tag = [0u8; 11];
    while file.read_exact(&mut tag).is_ok() {
        let kind = tag[0] & 0x1f;
        let size = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]) as usize;
        let ts = u64::from(u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]]));
        let first = *first_ms.get_or_insert(ts);
        let media_ms = ts.saturating_sub(first);
        if media_ms > at_ms && found.is_some() {
            break;
        }
        // Skips what is left of this tag and its back pointer; `false` at the end of the file.
        let mut skip = |bytes: usize| file.seek_relative(bytes as i64 + 4).is_ok();
        if kind != 9 || !(2..=MAX_KEYFRAME_BYTES).contains(&size) {
            if !skip(size) {
                break;
            }
            continue;
        }
        let mut peek = [0u8; 2];
        if file.read_exact(&mut peek).is_err() {
            break;
        }
        let legacy_avc = peek[0] & 0x80 == 0 && peek[0] & 0x0f == 7;
        let is_header = legacy_avc && peek[1] == 0;
        // An AVC keyframe is a NAL-unit packet (type 1), not the end-of-sequence marker (type 2) a
        // publisher sends last with the keyframe flag.
        let is_key = peek[0] >> 4 & 0x07 == 1 && (!legacy_avc || peek[1] == 1);
        if !is_header && !is_key {
            if file.seek_relative(size as i64 - 2 + 4).is_err() {
                break;
            }
            continue;
        }
        let mut body = vec![0; size];
        body[..2].copy_from_slice(&peek);
        if file.read_exact(&mut body[2..]).is_err() {
            break;
        }
        let body = Bytes::from(body);
        if is_header {
            header = body;
        } else {
            let composition = match body.get(2..5) {
                Some(&[a, b, c]) if legacy_avc => {
                    // A signed 24-bit number.
                    i64::from((u32::from_be_bytes([a, b, c, 0]) as i32) >> 8)
                }
                _ => 0,
            };
            found = Some(Keyframe {
                header: header.clone(),
                body,
                dts_ms: media_ms,
                pts_ms: (media_ms as i64).saturating_add(composition).max(0) as u64,
            });
        }
        if file.seek_relative(4).is_err() {
            break;
        }
    }
    found.ok_or_else(|| {
        SnapshotError::NoKeyframe(format!(
            "the recording holds no video keyframe{}",
            if at_ms > 0 { " up to that time" } else { "" }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&ts.to_be_bytes()[1..]);
        t.push((ts >> 24) as u8);
        t.extend_from_slice(&[0, 0, 0]);
        t.extend_from_slice(body);
        t.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
        t
    }

    fn file(tags: &[Vec<u8>]) -> Vec<u8> {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for t in tags {
            f.extend_from_slice(t);
        }
        f
    }

    #[test]
    fn the_last_keyframe_at_or_before_the_time_with_its_header() {
        let dir = std::env::temp_dir().join(format!("popline-recorded-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("live/s")).unwrap();
        let path = dir.join("live/s/s-1.flv");
        let flv = file(&[
            tag(9, 1000, b"\x17\x00\x00\x00\x00header-1"),
            tag(9, 1000, b"\x17\x01\x00\x00\x00key-at-0"),
            tag(8, 1010, b"\xaf\x01audio"),
            tag(9, 1040, b"\x27\x01\x00\x00\x00inter"),
            tag(9, 3000, b"\x17\x01\x00\x00\x28key-at-2000"),
            tag(9, 5000, b"\x17\x00\x00\x00\x00header-2"),
            tag(9, 5000, b"\x17\x01\x00\x00\x00key-at-4000"),
            tag(9, 5040, b"\x17\x02\x00\x00\x00"),
        ]);
        std::fs::write(&path, &flv).unwrap();
        let at = |ms| keyframe_at(&path, ms).unwrap();
        assert_eq!(&at(0).body[5..], b"key-at-0");
        assert_eq!(&at(1999).body[5..], b"key-at-0");
        let k = at(2500);
        assert_eq!(
            (&k.body[5..], &k.header[5..], k.dts_ms, k.pts_ms),
            (&b"key-at-2000"[..], &b"header-1"[..], 2000, 2040)
        );
        let k = at(60_000);
        assert_eq!(
            (&k.body[5..], &k.header[5..]),
            (&b"key-at-4000"[..], &b"header-2"[..])
        );
        // A file cut mid-tag (a crash) is read up to its last whole tag.
        // (The last 20 bytes are the end-of-sequence tag, then 8 of the keyframe before it.)
        std::fs::write(&path, &flv[..flv.len() - 28]).unwrap();
        assert_eq!(&at(60_000).body[5..], b"key-at-2000");
        // Names.
        assert_eq!(resolve(&dir, "live/s/s-1.flv").unwrap(), path);
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "live/s/s-1.txt",
            "",
            "live/../live/s/s-1.flv",
        ] {
            assert_eq!(resolve(&dir, bad).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(resolve(&dir, "live/s/none.flv").unwrap_err().status(), 404);
        let listed = list(&dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "live/s/s-1.flv");
        std::fs::write(&path, b"FLV").unwrap();
        assert_eq!(keyframe_at(&path, 0).unwrap_err().status(), 422);
        std::fs::write(&path, b"garbage garbage garbage").unwrap();
        assert_eq!(keyframe_at(&path, 0).unwrap_err().status(), 422);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
