//! Decoder tests: examples of each outcome, and the fast path held to serde_json's reading on
//! random and malformed records.

use super::*;

fn decoder() -> Decoder {
    let mut mapping = FieldMapping::default();
    mapping.extra.push("campaign".into());
    Decoder::new(&mapping)
}

#[test]
fn a_quickstart_event_decodes_with_borrowed_strings() {
    let raw = br#"{"type":"click","user_id":"u1","product_id":"p9","category":"audio","price":12.5,"ts":1767225600000,"campaign":"spring"}"#;
    let event = decoder().decode(raw).unwrap();
    assert_eq!(event.time, 1_767_225_600_000);
    assert!(matches!(event.user, Cow::Borrowed("u1")));
    assert_eq!(event.event_type.as_deref(), Some("click"));
    assert_eq!(event.price, Some(12.5));
    assert_eq!(event.extra, vec![FieldValue::Str("spring".into())]);
}

#[test]
fn unknown_and_nested_fields_are_skipped() {
    let raw = br#"{"user_id":7,"meta":{"a":[1,2,{"b":null}]},"ts":5}"#;
    let event = decoder().decode(raw).unwrap();
    assert_eq!(event.user, "7");
    assert_eq!(event.product, None);
    assert_eq!(event.extra, vec![FieldValue::Null]);
}

#[test]
fn each_kind_of_bad_record_gets_its_reason() {
    let cases: [(&[u8], Reason); 8] = [
        (b"{\"user_id\":\"u1\",", Reason::MalformedJson),
        (b"[1,2]", Reason::MalformedJson),
        (
            b"{\"user_id\":\"u1\",\"ts\":1} trailing",
            Reason::MalformedJson,
        ),
        (b"{\"ts\":1}", Reason::MissingField),
        (b"{\"user_id\":\"u1\"}", Reason::MissingField),
        (b"{\"user_id\":\"\",\"ts\":1}", Reason::InvalidField),
        (
            b"{\"user_id\":\"u1\",\"ts\":1,\"price\":\"cheap\"}",
            Reason::InvalidField,
        ),
        (
            b"{\"user_id\":\"u1\",\"ts\":\"yesterday\"}",
            Reason::InvalidTime,
        ),
    ];
    for (raw, reason) in cases {
        let rejection = decoder().decode(raw).unwrap_err();
        assert_eq!(rejection.reason, reason, "{}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn rejections_never_quote_the_record() {
    let rejection = decoder()
        .decode(br#"{"user_id":"secret-person","ts":"x"}"#)
        .unwrap_err();
    assert!(!rejection.detail.contains("secret-person"));
    let rejection = decoder()
        .decode(br#"{"user_id":"secret-person" oops}"#)
        .unwrap_err();
    assert!(!rejection.detail.contains("secret"));
}

#[test]
fn time_formats_convert_to_epoch_millis() {
    let str_time = |s: &'static str| FieldValue::Str(Cow::Borrowed(s));
    assert_eq!(
        parse_time(FieldValue::Int(1_700_000_000), TimeFormat::EpochSeconds),
        Some(1_700_000_000_000)
    );
    assert_eq!(
        parse_time(FieldValue::Float(1.5), TimeFormat::EpochSeconds),
        Some(1_500)
    );
    assert_eq!(
        parse_time(str_time("2026-01-01T01:00:00Z"), TimeFormat::Rfc3339),
        Some(1_767_229_200_000)
    );
    assert_eq!(
        parse_time(str_time("2026-01-01T01:00:00+01:00"), TimeFormat::Rfc3339),
        Some(1_767_225_600_000)
    );
    assert_eq!(
        parse_time(FieldValue::Float(1.5), TimeFormat::EpochMillis),
        None
    );
    assert_eq!(parse_time(FieldValue::Int(5), TimeFormat::Rfc3339), None);
}

#[test]
fn generated_events_take_the_fast_path() {
    let decoder = decoder();
    let spec = tidemark_api::GeneratorSpec {
        events: Some(2_000),
        ..tidemark_api::GeneratorSpec::default()
    };
    for line in crate::source::generator::Generator::lines(&spec) {
        let mut slots = Slots::new(decoder.names.len());
        assert!(
            scan::record(&decoder.names, &line, &mut slots).is_some(),
            "{}",
            String::from_utf8_lossy(&line)
        );
        assert_eq!(
            format!("{:?}", decoder.decode(&line)),
            format!("{:?}", decoder.decode_with_serde(&line))
        );
    }
}

#[test]
fn numbers_read_as_serde_json_reads_them() {
    let decoder = decoder();
    for number in [
        "0",
        "-0",
        "-0.0",
        "7",
        "-7",
        "12.5",
        "12.50",
        "1e3",
        "1E+3",
        "25e-1",
        "-1.5e2",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "0.1",
        "0.30000000000000004",
        "123456789012345678.9",
        "1e22",
        "1e23",
        "1e-22",
        "1e-23",
        "1e308",
        "1e309",
        "-1e400",
        "1.7976931348623157e308",
        "4.9e-324",
        "00",
        "01",
        "1.",
        "-",
        "-a",
        "1e",
        "1e+",
        ".5",
        "1.5.2",
        "+1",
        "0x10",
    ] {
        for field in ["price", "campaign", "ts", "user_id"] {
            let raw = format!(r#"{{"user_id":"u","ts":5,"{field}":{number}}}"#);
            assert_eq!(
                format!("{:?}", decoder.decode(raw.as_bytes())),
                format!("{:?}", decoder.decode_with_serde(raw.as_bytes())),
                "{raw}"
            );
        }
    }
}

#[test]
fn deep_nesting_is_read_as_serde_json_reads_it() {
    let decoder = decoder();
    for depth in [1, 63, 64, 65, 126, 127, 128, 129, 300] {
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            for field in ["meta", "campaign"] {
                let raw = format!(r#"{{"user_id":"u","{field}":{value},"ts":5}}"#);
                assert_eq!(
                    format!("{:?}", decoder.decode(raw.as_bytes())),
                    format!("{:?}", decoder.decode_with_serde(raw.as_bytes())),
                    "{field} at depth {depth}"
                );
            }
        }
    }
}

mod fuzz {
    //! The fast path against serde_json's reading on random records: well-formed ones built
    //! from the pieces that matter (mapped and unknown keys, escapes, non-ASCII and invalid
    //! UTF-8, numbers of every shape, nested values, whitespace), the same with random damage,
    //! and random bytes.

    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "user_id", "product_id", "type", "category", "price", "ts", "campaign",
            ])
            .prop_map(|k| k.as_bytes().to_vec()),
            1 => prop::sample::select(vec![
                "user\\u005fid", "ts\\n", "é", "meta", "", "user_id ", "\\\"", "ts\\/",
            ])
            .prop_map(|k| k.as_bytes().to_vec()),
            1 => text(),
        ]
        .prop_map(|k| [b"\"".as_slice(), &k, b"\""].concat())
    }

    /// The inside of a string: mostly plain, sometimes escapes, non-ASCII, control characters
    /// or invalid UTF-8.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(b"abcu019 -_.:".to_vec()).prop_map(|b| vec![b]),
                1 => prop::sample::select(vec![
                    "\\\"", "\\\\", "\\/", "\\b", "\\n", "\\t", "\\u00e9", "\\ud83d\\ude00",
                    "\\ud83d", "\\ude00", "\\u12", "\\x", "é", "€", "\u{1F600}",
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
                1 => prop::sample::select(vec![0x00u8, 0x1f, 0x7f, 0x80, 0xc3, 0xff])
                    .prop_map(|b| vec![b]),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn number() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| f.to_string()),
            (any::<i32>(), 0u32..6).prop_map(|(n, scale)| format!(
                "{}.{:0>width$}",
                n / 10i32.pow(scale).max(1),
                (n % 10i32.pow(scale).max(1)).unsigned_abs(),
                width = scale as usize
            )),
            ("-?[0-9]{1,25}(\\.[0-9]{0,25})?([eE][-+]?[0-9]{0,4})?").prop_map(|s| s),
        ]
        .prop_map(String::into_bytes)
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            3 => text().prop_map(|t| [b"\"".as_slice(), &t, b"\""].concat()),
            3 => number(),
            1 => prop::sample::select(vec!["null", "true", "false", "nul", "tru", "[]", "{}"])
                .prop_map(|s| s.as_bytes().to_vec()),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                    [b"[".as_slice(), &items.join(b",".as_slice()), b"]"].concat()
                }),
                prop::collection::vec((key(), inner), 0..4).prop_map(|entries| {
                    let entries: Vec<Vec<u8>> = entries
                        .into_iter()
                        .map(|(k, v)| [k.as_slice(), b":", &v].concat())
                        .collect();
                    [b"{".as_slice(), &entries.join(b",".as_slice()), b"}"].concat()
                }),
            ]
        })
    }

    fn space() -> impl Strategy<Value = &'static [u8]> {
        prop::sample::select(vec![b"".as_slice(), b"", b"", b" ", b"\t", b"\r\n "])
    }

    fn record() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((key(), value(), space(), space()), 0..9).prop_map(|fields| {
            let fields: Vec<Vec<u8>> = fields
                .into_iter()
                .map(|(k, v, a, b)| [a, k.as_slice(), b, b":", a, &v, b].concat())
                .collect();
            [b"{".as_slice(), &fields.join(b",".as_slice()), b"}"].concat()
        })
    }

    /// Cuts, inserts, deletes or replaces one byte.
    fn damaged() -> impl Strategy<Value = Vec<u8>> {
        (record(), any::<prop::sample::Index>(), any::<u8>(), 0..4u8).prop_map(
            |(mut raw, at, byte, how)| {
                let at = at.index(raw.len() + 1);
                match how {
                    0 => raw.truncate(at),
                    1 => raw.insert(at, byte),
                    2 if at < raw.len() => {
                        raw.remove(at);
                    }
                    _ if at < raw.len() => raw[at] = byte,
                    _ => {}
                }
                raw
            },
        )
    }

    fn check(raw: &[u8]) -> Result<(), TestCaseError> {
        for decoder in [decoder(), Decoder::new(&FieldMapping::default())] {
            prop_assert_eq!(
                format!("{:?}", decoder.decode(raw)),
                format!("{:?}", decoder.decode_with_serde(raw)),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn the_fast_path_reads_well_formed_records_as_serde_json_does(raw in record()) {
            check(&raw)?;
        }

        #[test]
        fn the_fast_path_reads_damaged_records_as_serde_json_does(raw in damaged()) {
            check(&raw)?;
        }

        #[test]
        fn the_fast_path_reads_random_bytes_as_serde_json_does(
            raw in prop::collection::vec(
                prop::sample::select(b"{}[]\":,\\ 0123456789.-eEtrufalsn u\x00\xc3\xa9".to_vec()),
                0..40,
            )
        ) {
            check(&raw)?;
        }
    }
}
