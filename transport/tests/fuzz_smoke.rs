//! The fuzz targets' bodies (`transport::fuzzing`) over random and mutated inputs: a stable-toolchain stand-in
//! for `cargo fuzz` that runs on every CI run. A failing case prints its seed and iteration.
#![allow(clippy::unwrap_used)]

use transport::fuzzing;
use transport::sim::SimRng;
use transport::wire::frame::{AckFrame, DroppedNotice, FragmentHeader};
use transport::wire::packet::{self, DataHeader};
use transport::{DropReason, MediaKind};

/// Valid inputs to mutate from: headers of every packet type and a payload with every frame type.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut v = Vec::new();
    packet::write_initial(&mut v, 0, 7, &[1; 24], &[2; 96]);
    out.push(v);
    let mut v = Vec::new();
    packet::write_retry(&mut v, 7, &[3; 24]);
    out.push(v);
    let mut v = Vec::new();
    packet::write_handshake(&mut v, 7, 9, &[4; 48]);
    out.push(v);
    let mut v = Vec::new();
    packet::write_data_header(
        &mut v,
        &DataHeader {
            dst_cid: 1,
            packet_number: 5,
            key_phase: false,
        },
    );
    AckFrame {
        ack_delay_us: 3,
        ranges: vec![10..=20, 1..=5],
    }
    .encode(&mut v);
    FragmentHeader {
        stream: 1,
        seq: 2,
        kind: MediaKind::Inter,
        frame_len: 100,
        offset: 10,
        age_us: 5,
        budget_us: Some(9),
    }
    .encode(&[5; 20], &mut v);
    DroppedNotice {
        stream: 1,
        seq: 3,
        kind: MediaKind::Key,
        reason: DropReason::Deadline,
    }
    .encode(&mut v);
    out.push(v);
    out
}

fn mutate(rng: &mut SimRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len() as u64) as usize;
                v[i] = rng.next_u64() as u8;
            }
            2 => v.truncate(rng.below(v.len() as u64 + 1) as usize),
            3 => {
                let i = rng.below(v.len() as u64 + 1) as usize;
                v.insert(
                    i,
                    [0x00, 0x3f, 0x40, 0x7f, 0x80, 0xbf, 0xc0, 0xff][rng.below(8) as usize],
                );
            }
            _ => v.extend((0..rng.below(16)).map(|_| rng.next_u64() as u8)),
        }
    }
    v
}

fn run(target: fn(&[u8]), iterations: u64, seed: u64) {
    let mut rng = SimRng::new(seed);
    let seeds = seeds();
    for i in 0..iterations {
        let input = if i % 2 == 0 {
            let base = &seeds[rng.below(seeds.len() as u64) as usize];
            mutate(&mut rng, base)
        } else {
            (0..rng.below(1500)).map(|_| rng.next_u64() as u8).collect()
        };
        let r = std::panic::catch_unwind(|| target(&input));
        assert!(r.is_ok(), "seed {seed} iteration {i}: input {input:02x?}");
    }
}

#[test]
fn packet_decoder_survives_random_and_mutated_input() {
    run(fuzzing::packet_decoder, 200_000, 1);
}

#[test]
fn handshake_survives_random_and_mutated_input() {
    run(fuzzing::handshake, 3_000, 2);
}

#[test]
fn endpoint_survives_random_and_mutated_datagram_sequences() {
    run(fuzzing::endpoint, 3_000, 3);
}

#[test]
fn connection_survives_random_and_mutated_records() {
    run(fuzzing::connection, 1_500, 4);
}

#[test]
fn handshake_response_survives_random_and_mutated_input() {
    run(fuzzing::handshake_response, 1_500, 5);
}
