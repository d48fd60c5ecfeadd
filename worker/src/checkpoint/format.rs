//! The checkpoint file format: a fixed 32-byte header, then a body of metadata and state.
//!
//! This module owns encoding and validation only — pure functions over bytes, no I/O. Where files
//! live, how they are written crash-safely and which ones are kept is the store's business
//! (`super::store`).
//!
//! ```text
//! header (32 bytes, little endian)
//!   0..8    magic "TDMKCKPT"
//!   8..10   format version (u16) = 1
//!   10..12  flags (u16), none defined: a reader rejects bits it does not know
//!   12..16  reserved, zero
//!   16..24  body length in bytes (u64)
//!   24..28  CRC32C of the body (u32)
//!   28..32  CRC32C of bytes 0..28 (u32), so a flipped length is told from a truncated file
//! body
//!   u32     metadata length m
//!   m bytes metadata as JSON (`Metadata`)
//!   rest    state bytes, opaque to the store
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// First bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"TDMKCKPT";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 32;

/// What a checkpoint says about the task besides its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The task (partition index of the pipeline's inputs).
    pub task: u32,
    /// Checkpoint id, strictly increasing per task.
    pub checkpoint_id: u64,
    /// Assignment epoch under which the checkpoint was taken.
    pub epoch: u64,
    /// Next offset to read, per source name and partition (the Kafka "committed offset" meaning:
    /// every record before it is reflected in the state).
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
    /// The task's watermark, epoch ms (`i64::MIN` before any event).
    pub watermark: i64,
    /// Wall-clock time the checkpoint was taken, epoch ms.
    pub created_at_ms: i64,
}

/// Why bytes are not a valid checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Shorter than the header.
    #[error("file of {0} bytes is shorter than the header")]
    ShortHeader(u64),
    /// The magic is wrong: not a checkpoint at all.
    #[error("bad magic")]
    BadMagic,
    /// The header checksum does not match (a damaged header).
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// Written by a format version this code cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// Flags this code does not know.
    #[error("unknown flags {0:#06x}")]
    UnknownFlags(u16),
    /// The body is shorter or longer than the header says.
    #[error("body is {actual} bytes, header says {expected}")]
    Length {
        /// Length from the header.
        expected: u64,
        /// Bytes actually present after the header.
        actual: u64,
    },
    /// The body checksum does not match (a flipped bit, a torn write).
    #[error("body checksum mismatch: header {expected:#010x}, computed {actual:#010x}")]
    BodyChecksum {
        /// Checksum from the header.
        expected: u32,
        /// Checksum of the bytes read.
        actual: u32,
    },
    /// The metadata cannot be decoded although the checksum matched (a writer bug).
    #[error("undecodable metadata: {0}")]
    Metadata(String),
    /// A valid checkpoint of another task (a file copied into the wrong directory).
    #[error("checkpoint of task {found} in the directory of task {expected}")]
    WrongTask {
        /// The directory's task.
        expected: u32,
        /// The task in the metadata.
        found: u32,
    },
}

/// The header of a body of `body_len` bytes whose checksum is `body_crc`.
pub fn header(body_len: u64, body_crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // flags (10..12) and reserved (12..16) stay zero
    h[16..24].copy_from_slice(&body_len.to_le_bytes());
    h[24..28].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&header_crc.to_le_bytes());
    h
}

/// The parts of a file in write order: header, metadata prefix (length + JSON), then the state,
/// which is borrowed so a large state is never copied.
#[derive(Debug)]
pub struct Encoded {
    /// The header.
    pub header: [u8; HEADER_LEN],
    /// Metadata length and metadata JSON.
    pub meta: Vec<u8>,
}

impl Encoded {
    /// Total file length.
    pub fn file_len(&self, state: &[u8]) -> u64 {
        (HEADER_LEN + self.meta.len() + state.len()) as u64
    }
}

/// Encodes `meta` and computes the header for `meta` followed by `state`.
///
/// Errors: only when the metadata cannot be serialized or exceeds 4 GiB (neither happens for
/// well-formed metadata).
pub fn encode(meta: &Metadata, state: &[u8]) -> Result<Encoded, serde_json::Error> {
    let json = serde_json::to_vec(meta)?;
    let len = u32::try_from(json.len()).map_err(|_| {
        <serde_json::Error as serde::ser::Error>::custom("metadata longer than 4 GiB")
    })?;
    let mut prefix = Vec::with_capacity(4 + json.len());
    prefix.extend_from_slice(&len.to_le_bytes());
    prefix.extend_from_slice(&json);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&prefix), state);
    let body_len = (prefix.len() + state.len()) as u64;
    Ok(Encoded {
        header: header(body_len, crc),
        meta: prefix,
    })
}

/// Encodes a whole checkpoint file into one buffer (handy for small states and tests; the store
/// writes the parts of [`encode`] without this copy).
pub fn encode_to_vec(meta: &Metadata, state: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let encoded = encode(meta, state)?;
    let mut out = Vec::with_capacity(encoded.file_len(state) as usize);
    out.extend_from_slice(&encoded.header);
    out.extend_from_slice(&encoded.meta);
    out.extend_from_slice(state);
    Ok(out)
}

/// A validated checkpoint: its metadata and the file bytes its state is a part of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Decoded metadata.
    pub meta: Metadata,
    bytes: Vec<u8>,
    state_at: usize,
}

impl Checkpoint {
    /// Validates a whole checkpoint file: magic, header checksum, version, flags, body length and
    /// body checksum, then decodes the metadata. Takes the buffer so the state is not copied.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, Corruption> {
        if bytes.len() < HEADER_LEN {
            return Err(Corruption::ShortHeader(bytes.len() as u64));
        }
        let h = &bytes[..HEADER_LEN];
        if h[0..8] != MAGIC {
            return Err(Corruption::BadMagic);
        }
        if crc32c::crc32c(&h[0..28]) != le_u32(&h[28..32]) {
            return Err(Corruption::HeaderChecksum);
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != FORMAT_VERSION {
            return Err(Corruption::UnsupportedVersion(version));
        }
        let flags = u16::from_le_bytes([h[10], h[11]]);
        if flags != 0 {
            return Err(Corruption::UnknownFlags(flags));
        }
        let expected = u64::from_le_bytes(h[16..24].try_into().expect("8-byte slice"));
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != expected {
            return Err(Corruption::Length {
                expected,
                actual: body.len() as u64,
            });
        }
        let expected_crc = le_u32(&h[24..28]);
        let actual_crc = crc32c::crc32c(body);
        if actual_crc != expected_crc {
            return Err(Corruption::BodyChecksum {
                expected: expected_crc,
                actual: actual_crc,
            });
        }
        if body.len() < 4 {
            return Err(Corruption::Metadata("no metadata length".into()));
        }
        let meta_len = le_u32(&body[0..4]) as usize;
        let meta_end = 4usize
            .checked_add(meta_len)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| Corruption::Metadata("metadata longer than the body".into()))?;
        let meta: Metadata = serde_json::from_slice(&body[4..meta_end])
            .map_err(|err| Corruption::Metadata(err.to_string()))?;
        Ok(Self {
            meta,
            state_at: HEADER_LEN + meta_end,
            bytes,
        })
    }

    /// The opaque state bytes.
    pub fn state(&self) -> &[u8] {
        &self.bytes[self.state_at..]
    }

    /// The whole file as written (what a snapshot hand-off sends; the receiver validates it
    /// again with [`Checkpoint::decode`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Gives the file bytes back.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4-byte slice"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata {
            task: 3,
            checkpoint_id: 7,
            epoch: 2,
            offsets: BTreeMap::from([("clicks".into(), BTreeMap::from([(3, 1234)]))]),
            watermark: 1_700_000_000_000,
            created_at_ms: 1_700_000_100_000,
        }
    }

    #[test]
    fn encoded_file_decodes_to_the_same_metadata_and_state() {
        let bytes = encode_to_vec(&meta(), b"state").unwrap();
        let checkpoint = Checkpoint::decode(bytes).unwrap();
        assert_eq!(checkpoint.meta, meta());
        assert_eq!(checkpoint.state(), b"state");
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode_to_vec(&meta(), b"some state bytes").unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(damaged).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode_to_vec(&meta(), b"some state bytes").unwrap();
        for len in 0..bytes.len() {
            assert!(
                Checkpoint::decode(bytes[..len].to_vec()).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn a_newer_format_version_is_refused_not_misread() {
        let mut bytes = encode_to_vec(&meta(), b"x").unwrap();
        bytes[8] = 2;
        let h = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&h.to_le_bytes());
        assert_eq!(
            Checkpoint::decode(bytes),
            Err(Corruption::UnsupportedVersion(2))
        );
    }
}
