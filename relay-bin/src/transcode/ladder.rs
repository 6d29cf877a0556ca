//! An ABR ladder: the renditions a stream is transcoded into (`renditions = ["720p 2500k", "480p 1000k"]` in
//! an app's table), how each is named and sized, and the ffmpeg command that makes them all from one decode
//! of the source, keyframes where the source has them (so a player can switch at any segment boundary).

use std::fmt;

/// One rung: a picture height and a video bitrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// Its name, the suffix of its stream (`STREAM_720p`): `<height>p`.
    pub name: String,
    /// Picture height in pixels (even); the width keeps the source's aspect.
    pub height: u32,
    /// Video bitrate in kbit/s (constant: the encoder pads to it).
    pub video_kbps: u32,
}

/// Why a rendition's spelling is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rendition {spelled:?}: {why} (want HEIGHTp BITRATEk, e.g. \"720p 2500k\")")]
pub struct LadderError {
    spelled: String,
    why: &'static str,
}

impl Rendition {
    /// Reads `"720p 2500k"` (height 144..=2160, even; bitrate 100..=50000 kbit/s).
    pub fn parse(spelled: &str) -> Result<Rendition, LadderError> {
        let error = |why| LadderError {
            spelled: spelled.to_string(),
            why,
        };
        let mut words = spelled.split_whitespace();
        let (Some(size), Some(rate), None) = (words.next(), words.next(), words.next()) else {
            return Err(error("two words"));
        };
        let height: u32 = size
            .strip_suffix('p')
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| error("the height is not a number followed by p"))?;
        let video_kbps: u32 = rate
            .strip_suffix('k')
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| error("the bitrate is not a number followed by k"))?;
        if !(144..=2160).contains(&height) || height % 2 != 0 {
            return Err(error("the height must be even, 144..=2160"));
        }
        if !(100..=50_000).contains(&video_kbps) {
            return Err(error("the bitrate must be 100k..=50000k"));
        }
        Ok(Rendition {
            name: format!("{height}p"),
            height,
            video_kbps,
        })
    }

    /// The rendition's stream name for source `stream`.
    pub fn stream_name(&self, stream: &str) -> String {
        format!("{stream}_{}", self.name)
    }

    /// Its width for a `width` x `height` source: the source's aspect at this height, rounded to even
    /// (what ffmpeg's `scale=-2:HEIGHT` makes).
    pub fn width_for(&self, width: u32, height: u32) -> u32 {
        if height == 0 {
            return 0;
        }
        let half = (u64::from(self.height) * u64::from(width) + u64::from(height)) / (2 * u64::from(height));
        (half * 2) as u32
    }

    /// The H.264 level the encoder is asked for (by macroblocks per second at up to 30 fps, 16:9; the
    /// renditions are capped at 30 fps): 3.0 up to 360p, 3.1 up to 720p, 4.0 up to 1080p, 5.1 above.
    pub fn level(&self) -> (u8, &'static str) {
        match self.height {
            0..=360 => (30, "3.0"),
            361..=720 => (31, "3.1"),
            721..=1080 => (40, "4.0"),
            _ => (51, "5.1"),
        }
    }

    /// The `CODECS` attribute of its variant: H.264 Main at [`Rendition::level`], and AAC-LC when the
    /// source has audio.
    pub fn codecs(&self, audio: bool) -> String {
        let video = format!("avc1.4d40{:02x}", self.level().0);
        if audio {
            format!("{video},mp4a.40.2")
        } else {
            video
        }
    }

    /// Its `BANDWIDTH`: video, audio (`audio_kbps`) and 10% for the containers, in bit/s.
    pub fn bandwidth(&self, audio_kbps: u32) -> u64 {
        u64::from(self.video_kbps + audio_kbps) * 1_100
    }
}

impl fmt::Display for Rendition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}k", self.name, self.video_kbps)
    }
}

/// Reads a ladder; renditions with the same height are refused.
pub fn parse_ladder(spelled: &[String]) -> Result<Vec<Rendition>, LadderError> {
    let mut ladder: Vec<Rendition> = Vec::with_capacity(spelled.len());
    for s in spelled {
        let rendition = Rendition::parse(s)?;
        if ladder.iter().any(|r| r.height == rendition.height) {
            return Err(LadderError {
                spelled: s.clone(),
                why: "two renditions of one height",
            });
        }
        ladder.push(rendition);
    }
    Ok(ladder)
}

/// Every app's ladder, from the config (apps without their own take `[fanout] renditions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ladders {
    /// By app, for apps with an `[apps.NAME]` table.
    pub by_app: std::collections::HashMap<String, (Vec<Rendition>, bool)>,
    /// The other apps' (`[fanout]`), and whether they transcode every stream.
    pub default: (Vec<Rendition>, bool),
}

impl Ladders {
    /// The ladders of `config` (validated: a rendition that does not parse is left out).
    pub fn from_config(config: &crate::config::Config) -> Ladders {
        let ladder =
            |f: &crate::config::FanoutConfig| (parse_ladder(&f.renditions).unwrap_or_default(), f.transcode);
        Ladders {
            by_app: config
                .apps
                .iter()
                .map(|(name, f)| (name.clone(), ladder(f)))
                .collect(),
            default: ladder(&config.fanout),
        }
    }

    /// `app`'s renditions, and whether it transcodes every stream.
    pub fn of(&self, app: &str) -> (&[Rendition], bool) {
        let (renditions, auto) = self.by_app.get(app).unwrap_or(&self.default);
        (renditions, *auto)
    }

    /// The streams a transcode of `source` publishes (whether or not one runs): forbidding a source
    /// forbids these too.
    pub fn rendition_keys(&self, source: &crate::stream_key::StreamKey) -> Vec<crate::stream_key::StreamKey> {
        self.of(source.app())
            .0
            .iter()
            .filter_map(|r| {
                crate::stream_key::StreamKey::new(source.app(), &r.stream_name(source.stream())).ok()
            })
            .collect()
    }
}

/// How the encoder runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderSettings {
    /// x264's preset (`veryfast`, `ultrafast`, ...).
    pub preset: String,
    /// Audio bitrate of every rendition (AAC-LC), in kbit/s.
    pub audio_kbps: u32,
}

/// The arguments (after the program) of one ffmpeg that reads `input` (the source over RTMP) once and
/// publishes every rendition to its URL: decoded once, each scaled and encoded with x264 at a constant
/// bitrate (`nal-hrd=cbr`), keyframes exactly where the source has them (`-force_key_frames source`, no
/// scene-cut keyframes), timestamps kept (`-copyts`: a rendition's timeline is its source's, so the lag is
/// a subtraction and a restarted worker continues the same timeline).
pub fn ffmpeg_args(input: &str, outputs: &[(Rendition, String)], settings: &EncoderSettings) -> Vec<String> {
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-copyts",
        "-rw_timeout",
        "10000000",
        "-i",
        input,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (rendition, url) in outputs {
        let kbps = rendition.video_kbps;
        let (_, level) = rendition.level();
        args.extend(
            [
                "-map",
                "0:v:0",
                "-map",
                "0:a:0?",
                "-vf",
                &format!("scale=-2:{}", rendition.height),
                // At most 30 fps (the levels above assume it); a faster source's frames are dropped evenly.
                "-fpsmax",
                "30",
                "-c:v",
                "libx264",
                "-preset",
                &settings.preset,
                "-profile:v",
                "main",
                "-level:v",
                level,
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                &format!("{kbps}k"),
                "-minrate",
                &format!("{kbps}k"),
                "-maxrate",
                &format!("{kbps}k"),
                "-bufsize",
                &format!("{kbps}k"),
                "-x264-params",
                "nal-hrd=cbr:scenecut=0",
                "-force_key_frames",
                "source",
                "-c:a",
                "aac",
                "-b:a",
                &format!("{}k", settings.audio_kbps),
                "-f",
                "flv",
                url,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renditions_are_read_and_checked() {
        assert_eq!(
            Rendition::parse(" 720p  2500k ").unwrap(),
            Rendition {
                name: "720p".into(),
                height: 720,
                video_kbps: 2500
            }
        );
        for bad in [
            "720p",
            "720 2500k",
            "720p 2500",
            "721p 1000k",
            "100p 500k",
            "720p 99k",
            "720p 2500k x",
            "",
        ] {
            assert!(Rendition::parse(bad).is_err(), "{bad}");
        }
        let error = parse_ladder(&["720p 2500k".into(), "720p 1000k".into()]).unwrap_err();
        assert!(
            error.to_string().contains("two renditions of one height"),
            "{error}"
        );
    }

    #[test]
    fn sizes_codecs_and_names() {
        let r = Rendition::parse("480p 1000k").unwrap();
        assert_eq!(r.stream_name("shop"), "shop_480p");
        assert_eq!(r.width_for(1280, 720), 854);
        assert_eq!(r.width_for(640, 360), 854);
        assert_eq!(r.width_for(1080, 1920), 270);
        assert_eq!(r.width_for(0, 0), 0);
        assert_eq!(r.codecs(true), "avc1.4d401f,mp4a.40.2");
        assert_eq!(
            Rendition::parse("360p 600k").unwrap().codecs(false),
            "avc1.4d401e"
        );
        assert_eq!(
            Rendition::parse("720p 2500k").unwrap().codecs(true),
            "avc1.4d401f,mp4a.40.2"
        );
        assert_eq!(r.bandwidth(96), 1_205_600);
    }

    #[test]
    fn one_input_and_an_output_per_rendition_with_source_keyframes() {
        let ladder = parse_ladder(&["720p 2500k".into(), "360p 600k".into()]).unwrap();
        let outputs: Vec<_> = ladder
            .iter()
            .map(|r| (r.clone(), format!("rtmp://h/live/s_{}", r.name)))
            .collect();
        let args = ffmpeg_args(
            "rtmp://h/live/s",
            &outputs,
            &EncoderSettings {
                preset: "veryfast".into(),
                audio_kbps: 96,
            },
        );
        assert_eq!(args.iter().filter(|a| *a == "-i").count(), 1);
        assert_eq!(args.iter().filter(|a| *a == "source").count(), 2);
        assert!(args.contains(&"scale=-2:360".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("rtmp://h/live/s_360p"));
    }
}
