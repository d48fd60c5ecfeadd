//! The fast path of decoding: a field-extracting JSON scanner that walks a record once, byte by
//! byte, reads the values of the mapped fields and only validates everything else.
//!
//! It is exact where it answers and gives up where it is not sure: anything it does not handle
//! itself — malformed JSON (for serde_json's error message), escapes in a key or a mapped string,
//! a mapped object or array, a number that is not a plain integer or a decimal with a small
//! exponent — returns `None`, and the caller decodes the record with serde_json instead
//! (`super::serde`). What it accepts it reads as serde_json reads it: the same grammar, the
//! first occurrence of a mapped field wins, skipped strings are not checked for UTF-8 but keys
//! and mapped strings are, numbers are converted with serde_json's arithmetic. The property test
//! in `super::tests` holds it to that.

use std::borrow::Cow;

use crate::event::FieldValue;

use super::Slots;

/// Byte classes inside a JSON string.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const ESCAPE: u8 = 2;
const CONTROL: u8 = 3;
const NON_ASCII: u8 = 4;

/// The class of each byte inside a string.
static CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b {
            0x00..=0x1f => CONTROL,
            0x22 => QUOTE,
            0x5c => ESCAPE,
            0x80..=0xff => NON_ASCII,
            _ => PLAIN,
        };
        b += 1;
    }
    table
};

/// Powers of ten that are exact in an `f64`, as serde_json's table has them.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Deepest nesting of a skipped value the scanner follows itself (one bit per level).
const MAX_DEPTH: u32 = 64;

/// Reads the mapped fields of `raw` (field names by slot in `names`) into `slots`; `None` when
/// the record must be decoded by serde_json instead.
pub(super) fn record<'a>(names: &[String], raw: &'a [u8], slots: &mut Slots<'a>) -> Option<()> {
    // UTF-8 is checked once for the whole line (one pass, word at a time for ASCII) so that
    // mapped strings are slices of it; a line that is not UTF-8 throughout (which serde_json
    // accepts where the bad bytes are in skipped strings) has its strings checked one by one.
    let text = std::str::from_utf8(raw).ok();
    let mut i = ws(raw, 0);
    if raw.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(raw, i + 1);
    let mut present = 0u64;
    if raw.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if raw.get(i) != Some(&b'"') {
                return None;
            }
            let (end, class) = string(raw, i + 1)?;
            if class & (1 << ESCAPE) != 0 {
                return None;
            }
            let key = &raw[i + 1..end];
            if class & (1 << NON_ASCII) != 0 && text.is_none() {
                std::str::from_utf8(key).ok()?;
            }
            i = ws(raw, end + 1);
            if raw.get(i) != Some(&b':') {
                return None;
            }
            i = ws(raw, i + 1);
            // As the serde_json path does it: the first slot of that name, and one presence bit
            // per slot (slots past 63 share the last bit).
            match names.iter().position(|name| same(name.as_bytes(), key)) {
                Some(slot) if present & (1 << slot.min(63)) == 0 => {
                    present |= 1 << slot.min(63);
                    let (value, next) = scalar(raw, text, i)?;
                    *slots.get_mut(slot) = value;
                    i = next;
                }
                _ => i = skip(raw, i)?,
            }
            i = ws(raw, i);
            match raw.get(i) {
                Some(b',') => i = ws(raw, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (ws(raw, i) == raw.len()).then_some(())
}

/// Whether two short keys are equal: lengths first, then a byte loop (no call to `memcmp`).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The index of the first non-whitespace byte at or after `i` (or the length).
#[inline]
fn ws(raw: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = raw.get(i) {
        i += 1;
    }
    i
}

/// Scans a string whose opening quote is just before `i`: the index of its closing quote and
/// the set of byte classes (bits) it contains. `None` if it is not a valid JSON string: a control
/// character, an unknown escape, or no closing quote.
#[inline]
fn string(raw: &[u8], mut i: usize) -> Option<(usize, u8)> {
    let mut seen = 0u8;
    loop {
        i = plain_words(raw, i);
        let class = loop {
            match CLASS[usize::from(*raw.get(i)?)] {
                PLAIN => i += 1,
                class => break class,
            }
        };
        match class {
            QUOTE => return Some((i, seen)),
            NON_ASCII => {
                seen |= 1 << NON_ASCII;
                i += 1;
            }
            ESCAPE => {
                seen |= 1 << ESCAPE;
                i = escape(raw, i + 1)?;
            }
            _ => return None,
        }
    }
}

/// Skips 8 bytes at a time while none of them is a quote, a backslash, a control character or
/// non-ASCII (a word-at-a-time test; the byte loop of [`string`] finds which one it was).
#[inline]
fn plain_words(raw: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let zero_byte = |y: u64| y.wrapping_sub(ONES) & !y & HIGH;
    while let Some(chunk) = raw.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = x & HIGH
            | x.wrapping_sub(ONES * 0x20) & !x & HIGH
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')));
        if special != 0 {
            break;
        }
        i += 8;
    }
    i
}

/// Validates an escape whose backslash is just before `i` as serde_json does for a string it
/// skips (any four hex digits after `\u`); the index after it.
fn escape(raw: &[u8], i: usize) -> Option<usize> {
    match raw.get(i)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
        b'u' => {
            let hex = raw.get(i + 1..i + 5)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(i + 5)
        }
        _ => None,
    }
}

/// Reads the scalar value at `i` of `raw` (`text` when all of it is UTF-8); the index after
/// it. `None` for what serde_json must read: strings with escapes, objects, arrays, unusual
/// numbers, and errors.
#[inline]
fn scalar<'a>(raw: &'a [u8], text: Option<&'a str>, i: usize) -> Option<(FieldValue<'a>, usize)> {
    match raw.get(i)? {
        b'"' => {
            let (end, class) = string(raw, i + 1)?;
            if class & (1 << ESCAPE) != 0 {
                return None;
            }
            let value = match text {
                Some(text) => text.get(i + 1..end)?,
                None => std::str::from_utf8(&raw[i + 1..end]).ok()?,
            };
            Some((FieldValue::Str(Cow::Borrowed(value)), end + 1))
        }
        b'-' | b'0'..=b'9' => number(raw, i),
        b'n' => literal(raw, i, b"null").map(|end| (FieldValue::Null, end)),
        b't' => literal(raw, i, b"true").map(|end| (FieldValue::Bool(true), end)),
        b'f' => literal(raw, i, b"false").map(|end| (FieldValue::Bool(false), end)),
        _ => None,
    }
}

/// The index after `word` if it is at `i`.
#[inline]
fn literal(raw: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    raw.get(i..i + word.len())
        .filter(|found| *found == word)
        .map(|_| i + word.len())
}

/// Most decimal digits that always fit in a `u64`.
const EXACT_DIGITS: i32 = 19;

/// The digits at `i` appended to `value`: the result (wrapped on overflow: the caller checks the
/// digit count against [`EXACT_DIGITS`]), their count and the index after them.
#[inline]
fn digits(raw: &[u8], mut i: usize, mut value: u64) -> (u64, i32, usize) {
    let start = i;
    while let Some(&d @ b'0'..=b'9') = raw.get(i) {
        value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        i += 1;
    }
    (value, (i - start) as i32, i)
}

/// Reads the number at `i` as serde_json does (`ParserNumber` and `f64_from_parts` without
/// `float_roundtrip`), for numbers of at most 19 significant digits (which fit in a `u64`) and
/// a decimal exponent of at most 22; `None` for the rest.
fn number(raw: &[u8], mut i: usize) -> Option<(FieldValue<'_>, usize)> {
    let positive = raw[i] != b'-';
    if !positive {
        i += 1;
    }
    let (significand, whole, i) = match raw.get(i)? {
        b'0' => {
            if let Some(b'0'..=b'9') = raw.get(i + 1) {
                return None;
            }
            (0, 1, i + 1)
        }
        b'1'..=b'9' => digits(raw, i, 0),
        _ => return None,
    };
    if whole > EXACT_DIGITS {
        return None;
    }
    let (significand, exponent, i) = match raw.get(i) {
        Some(b'.') => {
            let (value, count, end) = digits(raw, i + 1, significand);
            if count == 0 || whole + count > EXACT_DIGITS {
                return None;
            }
            (value, -count, end)
        }
        Some(b'e' | b'E') => (significand, 0, i),
        _ => {
            let value = if positive {
                i64::try_from(significand)
                    .map(FieldValue::Int)
                    .unwrap_or(FieldValue::Float(significand as f64))
            } else {
                // serde_json reads `-0` and integers below i64::MIN as floats.
                let negative = (significand as i64).wrapping_neg();
                if negative >= 0 {
                    FieldValue::Float(-(significand as f64))
                } else {
                    FieldValue::Int(negative)
                }
            };
            return Some((value, i));
        }
    };
    let (exponent, i) = match raw.get(i) {
        Some(b'e' | b'E') => {
            let mut j = i + 1;
            let sign = match raw.get(j) {
                Some(b'-') => -1,
                Some(b'+') => 1,
                _ => 0,
            };
            if sign != 0 {
                j += 1;
            }
            let (value, count, end) = digits(raw, j, 0);
            if count == 0 || count > 4 {
                return None;
            }
            let value = i32::try_from(value).ok()?;
            (exponent + if sign < 0 { -value } else { value }, end)
        }
        _ => (exponent, i),
    };
    let pow = *POW10.get(exponent.unsigned_abs() as usize)?;
    let mut f = significand as f64;
    if exponent >= 0 {
        f *= pow;
    } else {
        f /= pow;
    }
    Some((FieldValue::Float(if positive { f } else { -f }), i))
}

/// Validates the number at `i` as serde_json does when it skips one (any magnitude); the index
/// after it.
fn skip_number(raw: &[u8], mut i: usize) -> Option<usize> {
    if raw[i] == b'-' {
        i += 1;
    }
    i = match raw.get(i)? {
        b'0' => {
            if let Some(b'0'..=b'9') = raw.get(i + 1) {
                return None;
            }
            i + 1
        }
        b'1'..=b'9' => digits(raw, i, 0).2,
        _ => return None,
    };
    if raw.get(i) == Some(&b'.') {
        let (_, count, end) = digits(raw, i + 1, 0);
        if count == 0 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = raw.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = raw.get(i) {
            i += 1;
        }
        let (_, count, end) = digits(raw, i, 0);
        if count == 0 {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// A key of a skipped object at `i` and its colon: the index of the value after them.
fn skipped_key(raw: &[u8], i: usize) -> Option<usize> {
    if raw.get(i) != Some(&b'"') {
        return None;
    }
    let (end, _) = string(raw, i + 1)?;
    let i = ws(raw, end + 1);
    (raw.get(i) == Some(&b':')).then(|| ws(raw, i + 1))
}

/// Validates the value at `i` without reading it, as serde_json's `IgnoredAny` does; the index
/// after it. Nesting deeper than [`MAX_DEPTH`] is left to serde_json.
fn skip(raw: &[u8], mut i: usize) -> Option<usize> {
    // One bit per open container, innermost lowest: 1 for an object, 0 for an array.
    let mut stack = 0u64;
    let mut depth = 0u32;
    loop {
        match *raw.get(i)? {
            b'"' => i = string(raw, i + 1)?.0 + 1,
            b'-' | b'0'..=b'9' => i = skip_number(raw, i)?,
            b'n' => i = literal(raw, i, b"null")?,
            b't' => i = literal(raw, i, b"true")?,
            b'f' => i = literal(raw, i, b"false")?,
            open @ (b'[' | b'{') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = open == b'{';
                stack = stack << 1 | u64::from(object);
                depth += 1;
                i = ws(raw, i + 1);
                let close = if object { b'}' } else { b']' };
                if raw.get(i) != Some(&close) {
                    i = if object { skipped_key(raw, i)? } else { i };
                    continue;
                }
                i += 1;
                stack >>= 1;
                depth -= 1;
            }
            _ => return None,
        }
        // After a value: close the containers it ends, or move to the next element.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = ws(raw, i);
            let object = stack & 1 == 1;
            match raw.get(i)? {
                b',' => {
                    i = ws(raw, i + 1);
                    if object {
                        i = skipped_key(raw, i)?;
                    }
                    break;
                }
                b'}' if object => {}
                b']' if !object => {}
                _ => return None,
            }
            i += 1;
            stack >>= 1;
            depth -= 1;
        }
    }
}
