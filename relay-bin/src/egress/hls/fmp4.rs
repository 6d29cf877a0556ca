//! Fragmented MP4 (CMAF) for HLS: the initialization segment (`ftyp` + `moov`) of a stream's tracks, and a
//! media fragment (`moof` + `mdat`) of the samples of one part, with the boxes encoded by the `mp4-atom`
//! crate (kixelated's ISO-BMFF encoder and decoder, used by MoQ) and the samples' bytes not copied: a
//! fragment is its `moof` and `mdat` header followed by slices of the frames' own bodies.
//!
//! Timescales: video 90 kHz (FLV's milliseconds times 90), audio its sample rate (each AAC frame is 1024
//! samples).

use bytes::Bytes;
use mp4_atom::{
    esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig},
    Atom, Audio, Avc1, Avcc, Codec, Dinf, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Mdhd, Mdia, Mfhd, Minf,
    Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trak,
    Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

use super::tracks::{AudioTrack, VideoTrack};

/// The video track's id.
pub const VIDEO_TRACK_ID: u32 = 1;
/// The audio track's id.
pub const AUDIO_TRACK_ID: u32 = 2;
/// Video timescale: 90 kHz.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Samples in one AAC frame.
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// `sample_flags` of a sync sample (depends on no other).
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample (depends on others, not a sync sample).
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

/// Why a box could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("fMP4 encoding failed: {0}")]
pub struct Fmp4Error(String);

impl From<mp4_atom::Error> for Fmp4Error {
    fn from(error: mp4_atom::Error) -> Self {
        Fmp4Error(error.to_string())
    }
}

/// The initialization segment of a stream with `video` and/or `audio`.
pub fn init_segment(video: Option<&VideoTrack>, audio: Option<&AudioTrack>) -> Result<Bytes, Fmp4Error> {
    let mut out = Vec::with_capacity(1024);
    Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"cmfc"), FourCC::new(b"mp41")],
    }
    .encode(&mut out)?;
    let mut trak = Vec::new();
    let mut trex = Vec::new();
    if let Some(video) = video {
        trak.push(video_trak(video)?);
        trex.push(trex_for(VIDEO_TRACK_ID));
    }
    if let Some(audio) = audio {
        trak.push(audio_trak(audio));
        trex.push(trex_for(AUDIO_TRACK_ID));
    }
    Moov {
        mvhd: Mvhd {
            timescale: 1_000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    }
    .encode(&mut out)?;
    Ok(Bytes::from(out))
}

fn trex_for(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Default::default()
    }
}

fn empty_stbl(codec: Codec) -> Stbl {
    Stbl {
        stsd: Stsd { codecs: vec![codec] },
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn dinf() -> Dinf {
    Dinf {
        dref: Dref {
            urls: vec![Url {
                location: String::new(),
            }],
        },
    }
}

fn video_trak(video: &VideoTrack) -> Result<Trak, Fmp4Error> {
    let avcc = Avcc::decode_body(&mut &video.avc_config[..])?;
    let avc1 = Avc1 {
        visual: Visual {
            data_reference_index: 1,
            width: video.width,
            height: video.height,
            ..Default::default()
        },
        avcc,
        btrt: None,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK_ID,
            enabled: true,
            in_movie: true,
            width: video.width.into(),
            height: video.height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: VIDEO_TIMESCALE,
                language: "und".to_string(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(b"vide"),
                name: "popline video".to_string(),
            },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: dinf(),
                stbl: empty_stbl(Codec::Avc1(avc1)),
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

fn audio_trak(audio: &AudioTrack) -> Trak {
    let mp4a = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(audio.channels),
            sample_size: 16,
            sample_rate: (audio.sample_rate.min(u32::from(u16::MAX)) as u16).into(),
        },
        esds: Esds {
            es_desc: EsDescriptor {
                es_id: AUDIO_TRACK_ID as u16,
                dec_config: DecoderConfig {
                    object_type_indication: 0x40,
                    stream_type: 0x05,
                    up_stream: 0,
                    dec_specific: DecoderSpecific {
                        profile: audio.object_type,
                        freq_index: audio.frequency_index,
                        chan_conf: audio.channels,
                    },
                    ..Default::default()
                },
                sl_config: SLConfig::default(),
            },
        },
        btrt: None,
        taic: None,
    };
    Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK_ID,
            enabled: true,
            in_movie: true,
            alternate_group: 1,
            volume: 1.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: audio.sample_rate,
                language: "und".to_string(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(b"soun"),
                name: "popline audio".to_string(),
            },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: dinf(),
                stbl: empty_stbl(Codec::Mp4a(mp4a)),
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// One sample of a fragment: its data (a slice of the frame's body), duration and composition offset in
/// its track's timescale, and whether it is a sync sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's bytes (for H.264, length-prefixed NAL units; for AAC, one raw frame).
    pub data: Bytes,
    /// Duration, in the track's timescale.
    pub duration: u32,
    /// Presentation minus decode time, in the track's timescale.
    pub composition_offset: i32,
    /// A sync sample (keyframe; every audio frame).
    pub sync: bool,
}

/// One track's run in a fragment: its samples and the decode time of the first.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Decode time of the first sample, in the track's timescale.
    pub base_decode_time: u64,
    /// The samples, in decode order.
    pub samples: Vec<Sample>,
}

/// A media fragment: `moof` + `mdat` header, then the samples' bytes, as shared buffers (no copy).
#[derive(Debug, Clone, Default)]
pub struct Fragment {
    /// The buffers, in order.
    pub bytes: Vec<Bytes>,
    /// Their total length.
    pub len: usize,
}

/// The fragment `sequence` of `video` and `audio` runs (either may be empty).
pub fn fragment(sequence: u32, video: &Run, audio: &Run) -> Result<Fragment, Fmp4Error> {
    let runs: Vec<(u32, &Run)> = [(VIDEO_TRACK_ID, video), (AUDIO_TRACK_ID, audio)]
        .into_iter()
        .filter(|(_, run)| !run.samples.is_empty())
        .collect();
    // Encoded twice: the data offsets (from the moof's start to each run's first byte in the mdat) depend
    // on the moof's size, which they do not change.
    let mut offsets = vec![0i32; runs.len()];
    let mut moof_bytes = encode_moof(sequence, &runs, &offsets)?;
    let mut at = moof_bytes.len() + 8;
    for (i, (_, run)) in runs.iter().enumerate() {
        offsets[i] = i32::try_from(at).map_err(|_| Fmp4Error("fragment over 2 GiB".to_string()))?;
        at += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    moof_bytes = encode_moof(sequence, &runs, &offsets)?;
    let mdat_len = at - moof_bytes.len();
    let mdat_size = u32::try_from(mdat_len).map_err(|_| Fmp4Error("mdat over 4 GiB".to_string()))?;
    let mut mdat_header = Vec::with_capacity(8);
    mdat_header.extend_from_slice(&mdat_size.to_be_bytes());
    mdat_header.extend_from_slice(b"mdat");
    let mut bytes = Vec::with_capacity(2 + runs.iter().map(|(_, r)| r.samples.len()).sum::<usize>());
    let len = moof_bytes.len() + mdat_len;
    bytes.push(Bytes::from(moof_bytes));
    bytes.push(Bytes::from(mdat_header));
    for (_, run) in &runs {
        bytes.extend(run.samples.iter().map(|s| s.data.clone()));
    }
    Ok(Fragment { bytes, len })
}

fn encode_moof(sequence: u32, runs: &[(u32, &Run)], offsets: &[i32]) -> Result<Vec<u8>, Fmp4Error> {
    let traf = runs
        .iter()
        .zip(offsets)
        .map(|((track_id, run), &offset)| Traf {
            tfhd: Tfhd {
                track_id: *track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: run.base_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(offset),
                entries: run
                    .samples
                    .iter()
                    .map(|s| TrunEntry {
                        duration: Some(s.duration),
                        size: Some(s.data.len() as u32),
                        flags: Some(if s.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
                        cts: Some(s.composition_offset),
                    })
                    .collect(),
            }],
            ..Default::default()
        })
        .collect();
    let mut out = Vec::with_capacity(256);
    Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf,
    }
    .encode(&mut out)?;
    Ok(out)
}
