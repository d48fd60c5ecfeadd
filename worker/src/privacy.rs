//! Pseudonymisation of user ids (docs/design.md, security): a keyed hash replaces every event's user id
//! right after decoding, before filters, keys, window state, partials and results see it.
//!
//! The pseudonym of an id is `base64url(HMAC-SHA256(key, id)[..16])` without padding: 22
//! characters of `A-Z a-z 0-9 - _`. It depends on the key and the id's UTF-8 bytes only (an
//! integer id is hashed as its decimal text, as it is keyed), never on a process, a task or a
//! time, so every worker computes the same pseudonym for a user, before and after a restart or a
//! rescale, and co-partitioned joins and the global stage keep matching. 128 bits make a
//! collision negligible (about 10⁻²¹ for a billion users), and 22 characters fit in the window
//! state's inline key (23 bytes), so pseudonymised keys need no key arena.
//!
//! This module owns the key (read once from a file, never logged, hidden from `Debug`) and the
//! hashing; the engine decides where it applies (`crate::engine`). It does not touch the
//! dead-letter output: a dead letter carries the raw record by contract (docs/pipeline.md).

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tidemark_api::MarketingPipelineSpec;

/// Where the operator mounts the Secret named by `spec.privacy.pseudonymizeKeySecret` (its key
/// `key`) in every worker pod.
pub const DEFAULT_KEY_FILE: &str = "/etc/tidemark/privacy/key";

/// Fewest key bytes accepted. RFC 2104 recommends at least the hash's output length (32 bytes
/// for SHA-256); 16 is the floor below which a key could be guessed.
pub const MIN_KEY_BYTES: usize = 16;

/// Bytes of the HMAC kept in a pseudonym.
const TRUNCATED: usize = 16;

/// Characters of a pseudonym: 16 bytes in unpadded base64url.
pub const PSEUDONYM_LEN: usize = 22;

/// A buffer a pseudonym is written into; a task keeps one on its stack per event, so
/// pseudonymising allocates nothing.
pub type PseudonymBuf = [u8; PSEUDONYM_LEN];

/// Why the pseudonymisation key cannot be used. Messages name the file, never the key.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The key file cannot be read.
    #[error("failed to read the pseudonymisation key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no key (nothing but line breaks).
    #[error("failed to use the pseudonymisation key file {path}: it is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The key is too short to be secret.
    #[error("failed to use the pseudonymisation key file {path}: the key is {len} bytes, at least {MIN_KEY_BYTES} are needed (32 random bytes are recommended)")]
    Short {
        /// The file.
        path: PathBuf,
        /// Bytes of the key.
        len: usize,
    },
    /// A key file was given for a pipeline that does not pseudonymise.
    #[error("failed to use the pseudonymisation key file {0}: the manifest does not set spec.privacy.pseudonymizeKeySecret, which decides whether user ids are pseudonymised")]
    NotConfigured(PathBuf),
}

/// The keyed hash of user ids. Cloning it is cheap (two SHA-256 states keyed once).
#[derive(Clone)]
pub struct Pseudonymizer {
    /// HMAC state after the key: each id starts from a copy, so the key's two blocks are
    /// hashed once, not per event.
    keyed: Hmac<Sha256>,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer { key: <hidden> }")
    }
}

impl Pseudonymizer {
    /// A pseudonymizer with `key` (any length: HMAC hashes keys longer than a block).
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// Reads the key from `path`: the file's bytes without trailing line breaks (CR, LF), so a
    /// key written with `echo` and one from `kubectl create secret --from-literal` agree.
    pub fn load(path: &Path) -> Result<Self, PrivacyError> {
        let mut key = std::fs::read(path).map_err(|source| PrivacyError::Read {
            path: path.to_owned(),
            source,
        })?;
        while key.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            key.pop();
        }
        let result = match key.len() {
            0 => Err(PrivacyError::Empty {
                path: path.to_owned(),
            }),
            len if len < MIN_KEY_BYTES => Err(PrivacyError::Short {
                path: path.to_owned(),
                len,
            }),
            _ => Ok(Self::new(&key)),
        };
        key.fill(0);
        result
    }

    /// The pseudonymizer `spec` asks for: none when `spec.privacy.pseudonymizeKeySecret` is
    /// unset, else one keyed from `key_file` (default [`DEFAULT_KEY_FILE`]). A key file that
    /// cannot be used is an error, never a fallback to raw ids; so is a key file given for a
    /// pipeline that does not pseudonymise.
    pub fn for_spec(
        spec: &MarketingPipelineSpec,
        key_file: Option<&Path>,
    ) -> Result<Option<Self>, PrivacyError> {
        let configured = spec
            .privacy
            .as_ref()
            .is_some_and(|p| p.pseudonymize_key_secret.is_some());
        match (configured, key_file) {
            (true, path) => Self::load(path.unwrap_or(Path::new(DEFAULT_KEY_FILE))).map(Some),
            (false, Some(path)) => Err(PrivacyError::NotConfigured(path.to_owned())),
            (false, None) => Ok(None),
        }
    }

    /// Writes the pseudonym of `id` into `out` and returns it.
    pub fn pseudonym<'b>(&self, id: &str, out: &'b mut PseudonymBuf) -> &'b str {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut truncated = [0u8; TRUNCATED];
        truncated.copy_from_slice(&digest[..TRUNCATED]);
        base64url(&truncated, out);
        std::str::from_utf8(out).expect("base64url is ASCII")
    }

    /// The pseudonym of `id` as an owned string (tests, tools).
    pub fn pseudonym_string(&self, id: &str) -> String {
        self.pseudonym(id, &mut [0; PSEUDONYM_LEN]).to_owned()
    }

    /// The full HMAC-SHA256 of `message` (for the RFC 4231 test vectors).
    #[cfg(test)]
    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// RFC 4648 §5 alphabet.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url of 16 bytes: five 3-byte groups (20 characters), then the last byte (2).
fn base64url(bytes: &[u8; TRUNCATED], out: &mut PseudonymBuf) {
    let char_of = |sextet: u32| BASE64URL[(sextet & 63) as usize];
    for (group, chars) in bytes.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        chars[0] = char_of(n >> 18);
        chars[1] = char_of(n >> 12);
        chars[2] = char_of(n >> 6);
        chars[3] = char_of(n);
    }
    let last = u32::from(bytes[15]);
    out[20] = char_of(last >> 2);
    out[21] = char_of(last << 4);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn key_file(dir: &tempfile::TempDir, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join("key");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn the_keyed_hash_is_hmac_sha256_of_rfc_4231() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, message, expected) in cases {
            assert_eq!(hex(&Pseudonymizer::new(key).mac(message)), expected);
        }
    }

    #[test]
    fn a_pseudonym_is_the_first_16_bytes_of_the_hmac_in_unpadded_base64url() {
        // RFC 4231 test case 1: b0344c61d8db38535ca8afceaf0bf12b…
        assert_eq!(
            Pseudonymizer::new(&[0x0b; 20]).pseudonym_string("Hi There"),
            "sDRMYdjbOFNcqK_OrwvxKw"
        );
        // The documented recipe: printf %s u17 | openssl dgst -sha256 -hmac KEY -binary |
        // head -c 16 | basenc --base64url | tr -d =
        let p = Pseudonymizer::new(b"an example key of 32 bytes......");
        assert_eq!(p.pseudonym_string("u17"), "hYjK0qaH7qK-vGKhxZzUTw");
        assert_eq!(p.pseudonym_string("7"), "msX6YR9ysOMGXQY8-hoKSw");
        assert_eq!(
            p.pseudonym_string("\u{e9}l\u{e8}ve"),
            "5Scqw5JC5YNGjt9iFuoAWA"
        );
    }

    #[test]
    fn pseudonyms_are_22_url_safe_characters_and_differ_by_key() {
        let a = Pseudonymizer::new(b"first key, thirty-two bytes long");
        let b = Pseudonymizer::new(b"other key, thirty-two bytes long");
        let mut seen = std::collections::HashSet::new();
        for id in (0..2_000).map(|i| format!("u{i}")) {
            let pa = a.pseudonym_string(&id);
            assert_eq!(pa.len(), PSEUDONYM_LEN);
            assert!(pa
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(pa, a.clone().pseudonym_string(&id), "deterministic");
            assert_ne!(pa, b.pseudonym_string(&id));
            assert!(seen.insert(pa), "no collision among 2000 ids");
        }
    }

    #[test]
    fn a_key_file_is_its_bytes_without_trailing_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let key = b"an example key of 32 bytes......";
        let expected = Pseudonymizer::new(key).pseudonym_string("u17");
        for text in [
            &key[..],
            b"an example key of 32 bytes......\n",
            b"an example key of 32 bytes......\r\n",
        ] {
            let loaded = Pseudonymizer::load(&key_file(&dir, text)).unwrap();
            assert_eq!(loaded.pseudonym_string("u17"), expected);
        }
    }

    #[test]
    fn a_missing_empty_or_short_key_file_is_refused_without_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        assert!(matches!(
            Pseudonymizer::load(&missing),
            Err(PrivacyError::Read { .. })
        ));
        let empty = key_file(&dir, b"\n");
        assert!(matches!(
            Pseudonymizer::load(&empty),
            Err(PrivacyError::Empty { .. })
        ));
        let short = key_file(&dir, b"hunter2");
        let err = Pseudonymizer::load(&short).unwrap_err();
        assert!(matches!(err, PrivacyError::Short { len: 7, .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let debug = format!("{:?}", Pseudonymizer::new(b"hunter2 hunter2 hunter2"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn the_manifest_decides_whether_ids_are_pseudonymised() {
        let text = include_str!("../../examples/quickstart.yaml");
        let mut spec = tidemark_api::parse_manifest(text).unwrap().spec;
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(&dir, b"an example key of 32 bytes......");
        assert!(Pseudonymizer::for_spec(&spec, None).unwrap().is_none());
        assert!(matches!(
            Pseudonymizer::for_spec(&spec, Some(&path)),
            Err(PrivacyError::NotConfigured(_))
        ));
        spec.privacy = Some(tidemark_api::PrivacySpec {
            pseudonymize_key_secret: Some("tidemark-privacy".into()),
        });
        let p = Pseudonymizer::for_spec(&spec, Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(p.pseudonym_string("u17"), "hYjK0qaH7qK-vGKhxZzUTw");
        assert!(Pseudonymizer::for_spec(&spec, Some(&dir.path().join("absent"))).is_err());
    }
}
