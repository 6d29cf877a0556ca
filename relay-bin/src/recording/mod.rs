//! Recording (DVR): live streams written to FLV files that a crash cannot corrupt, on a thread of their own
//! ([`recorder`]), one file writer per stream ([`flv_file`]).

pub mod flv_file;
pub mod recorder;

pub use recorder::{RecordEvent, Recorder, RecorderCounters, RecorderHandle, RecorderSettings};
