//! Expression tests: examples, and the compiled form held to the interpreter on random
//! expressions and events.

use super::*;

fn event(price: f64, category: &'static str) -> Event<'static> {
    Event {
        time: 1_000,
        user: "u1".into(),
        product: Some("p1".into()),
        event_type: Some("purchase".into()),
        category: Some(category.into()),
        price: Some(price),
        extra: vec![FieldValue::Str("spring".into())],
    }
}

fn compile(text: &str) -> Expr {
    Expr::compile(text, Arc::from(vec!["campaign".to_owned()])).unwrap()
}

#[test]
fn the_design_example_filter_selects_expensive_audio() {
    let filter = compile(r#"event.price > 100.0 && event.category == "audio""#);
    assert!(filter.matches(&event(150.0, "audio")).unwrap());
    assert!(!filter.matches(&event(50.0, "audio")).unwrap());
    assert!(!filter.matches(&event(150.0, "books")).unwrap());
}

#[test]
fn extra_fields_and_derived_values_are_visible() {
    assert!(compile(r#"event.campaign == "spring""#)
        .matches(&event(1.0, "x"))
        .unwrap());
    assert_eq!(
        compile("event.price * 0.5")
            .derive(&event(10.0, "x"))
            .unwrap(),
        FieldValue::Float(5.0)
    );
}

#[test]
fn a_non_boolean_filter_is_an_error_not_a_crash() {
    assert!(matches!(
        compile("event.price").matches(&event(1.0, "x")),
        Err(ExprError::NotBoolean(_))
    ));
    assert!(compile("event.nope > 1").matches(&event(1.0, "x")).is_err());
    assert!(Expr::compile("event.price >", Arc::from(Vec::new())).is_err());
}

fn typical() -> Event<'static> {
    event(150.0, "audio")
}

#[test]
fn common_filter_shapes_run_compiled() {
    for text in [
        r#"event.type == "view""#,
        r#"event.price > 100.0 && event.category == "audio""#,
        r#"event.price >= 100 || !(event.category in ["books", "toys"])"#,
        r#"event.category.startsWith("au") && event.user.contains("1")"#,
        r#"event.campaign != "winter" && event.time % 2 == 0"#,
        "event.price * 0.5 + 1.0",
        r#"event.type == "purchase" ? event.price : 0.0"#,
    ] {
        let expr = compile(text);
        assert!(expr.is_compiled(), "{text}");
        assert!(expr.fast(&typical()).is_some(), "{text}");
    }
    assert!(!compile("has(event.price)").is_compiled());
    assert!(!compile("event.nope == 1").is_compiled());
}

mod property {
    //! Random expressions over random events: the compiled form (with its fallback) gives
    //! exactly what the interpreter gives, errors and their messages included.

    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;

    const EXTRA: [&str; 6] = ["campaign", "n", "f", "b", "price", "n"];

    fn field() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "user", "product", "type", "category", "price", "time", "campaign", "n", "f", "b",
            "nope",
        ])
        .prop_map(|f| format!("event.{f}"))
    }

    fn constant() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "2",
            "100",
            "9223372036854775807",
            "0.0",
            "-0.0",
            "1.5",
            "100.0",
            "1e300",
            "1u",
            "null",
            "true",
            "false",
            r#""view""#,
            r#""audio""#,
            r#""""#,
            r#""a""#,
            r#""u1""#,
        ])
        .prop_map(str::to_owned)
    }

    fn expression() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![field(), constant()];
        leaf.prop_recursive(4, 24, 3, |inner| {
            let binary = prop::sample::select(vec![
                "&&", "||", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
            ]);
            prop_oneof![
                (inner.clone(), binary, inner.clone())
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                inner.clone().prop_map(|a| format!("!({a})")),
                inner.clone().prop_map(|a| format!("-({a})")),
                (inner.clone(), prop::collection::vec(constant(), 0..4))
                    .prop_map(|(a, list)| format!("({a} in [{}])", list.join(", "))),
                (
                    inner.clone(),
                    prop::sample::select(vec!["startsWith", "endsWith", "contains"]),
                    inner.clone()
                )
                    .prop_map(|(a, m, b)| format!("({a}).{m}({b})")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            ]
        })
    }

    /// Expressions of the shapes that compile, so that most cases exercise the compiled form:
    /// numbers compared and combined, strings compared and searched, joined by `&&`, `||`, `!`.
    fn typed_expression() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            prop::sample::select(vec!["event.price", "event.time", "event.n", "event.f"])
                .prop_map(str::to_owned),
            prop::sample::select(vec![
                "0", "1", "-1", "2", "100", "150", "0.0", "0.5", "1.0", "1.5", "2.0", "99.5",
                "100.0", "150.0",
            ])
            .prop_map(str::to_owned),
        ];
        let number = number.prop_recursive(2, 6, 2, |inner| {
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%"]),
                inner,
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})"))
        });
        let string = prop::sample::select(vec![
            "event.user",
            "event.type",
            "event.category",
            "event.product",
            "event.campaign",
        ]);
        let literal = prop::sample::select(vec![
            r#""view""#,
            r#""audio""#,
            r#""""#,
            r#""a""#,
            r#""u1""#,
        ]);
        let compare = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
        let atom = prop_oneof![
            (number.clone(), compare.clone(), number)
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (string.clone(), compare, literal.clone())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (string.clone(), prop::collection::vec(literal.clone(), 0..4))
                .prop_map(|(a, list)| format!("{a} in [{}]", list.join(", "))),
            (
                string,
                prop::sample::select(vec!["startsWith", "endsWith", "contains"]),
                literal
            )
                .prop_map(|(a, m, b)| format!("{a}.{m}({b})")),
            prop::sample::select(vec!["event.b", "true", "false"]).prop_map(str::to_owned),
        ];
        atom.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop::sample::select(vec!["&&", "||"]),
                    inner.clone()
                )
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                inner.prop_map(|a| format!("!({a})")),
            ]
        })
    }

    fn text() -> impl Strategy<Value = Option<Cow<'static, str>>> {
        prop::option::weighted(
            0.8,
            prop::sample::select(vec!["view", "audio", "", "a", "u1", "au"])
                .prop_map(Cow::Borrowed),
        )
    }

    fn value() -> impl Strategy<Value = FieldValue<'static>> {
        prop_oneof![
            prop::sample::select(vec!["spring", "", "a", "view"])
                .prop_map(|s| FieldValue::Str(Cow::Borrowed(s))),
            prop::sample::select(vec![0i64, 1, -1, 2, 100, i64::MAX, i64::MIN])
                .prop_map(FieldValue::Int),
            prop::sample::select(vec![
                0.0f64,
                -0.0,
                1.0,
                1.5,
                2.0,
                100.0,
                f64::NAN,
                f64::INFINITY
            ])
            .prop_map(FieldValue::Float),
            any::<bool>().prop_map(FieldValue::Bool),
            Just(FieldValue::Null),
        ]
    }

    fn random_event() -> impl Strategy<Value = Event<'static>> {
        (
            prop::sample::select(vec!["u1", "", "a"]),
            (text(), text(), text()),
            prop::option::weighted(
                0.8,
                prop::sample::select(vec![0.0f64, 1.5, 2.0, 100.0, 150.0]),
            ),
            prop::sample::select(vec![0i64, 1, 2, 100, 150, i64::MAX]),
            prop::collection::vec(value(), 0..=EXTRA.len()),
        )
            .prop_map(
                |(user, (product, event_type, category), price, time, extra)| Event {
                    time,
                    user: Cow::Borrowed(user),
                    product,
                    event_type,
                    category,
                    price,
                    extra,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        #[test]
        fn compiled_and_interpreted_expressions_agree(
            text in prop_oneof![expression(), typed_expression()],
            event in random_event(),
        ) {
            let names: Arc<[String]> = EXTRA.iter().map(|s| s.to_string()).collect();
            let Ok(expr) = Expr::compile(&text, names) else {
                return Ok(());
            };
            prop_assert_eq!(
                format!("{:?}", expr.matches(&event)),
                format!("{:?}", expr.matches_interpreted(&event)),
                "{}", text
            );
            prop_assert_eq!(
                format!("{:?}", expr.derive(&event)),
                format!("{:?}", expr.derive_interpreted(&event)),
                "{}", text
            );
        }
    }
}
