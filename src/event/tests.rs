use super::*;

fn ok(body: &str) -> Event {
    match parse(body.as_bytes(), None) {
        Ok(e) => e,
        Err(e) => panic!("expected valid event, got {e}: {body}"),
    }
}

fn reason(body: &[u8]) -> String {
    match parse(body, Some("mid-1")) {
        Ok(e) => panic!("expected invalid event, got {e:?}"),
        Err(e) => e.reason,
    }
}

#[test]
fn single_subject_event_is_lowercased_and_keeps_multi_valued_attributes() {
    let e = ok(
        r#"{"action":"add","group":"App:Zoom:Users","subject":"JDoe",
        "attributes":{"mail":["jdoe@example.edu","j@example.edu"],"givenName":["John"]},
        "extra":"ignored"}"#,
    );
    assert_eq!(e.action, Action::Add);
    assert_eq!(e.group, "app:zoom:users");
    let Subjects::One {
        subject,
        attributes,
    } = &e.subjects
    else {
        panic!("single")
    };
    assert_eq!(subject, "jdoe");
    assert_eq!(
        attributes["mail"],
        vec!["jdoe@example.edu", "j@example.edu"]
    );
    assert!(e.id.starts_with("sha256:"), "id from body hash: {}", e.id);
}

#[test]
fn membership_sync_takes_subjects_and_per_subject_attributes() {
    let e = ok(
        r#"{"action":"membership_sync","group":"g","subjects":["B","a","b"],
        "attributes":{"A":{"mail":["a@x"]}},"id":"ev-7","actor":"alice"}"#,
    );
    assert_eq!(e.id, "ev-7");
    assert_eq!(e.actor.as_deref(), Some("alice"));
    let Subjects::All { subjects } = &e.subjects else {
        panic!("all")
    };
    let names: Vec<&str> = subjects.iter().map(|s| s.subject.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let a = subjects[0].attributes.as_ref().expect("a has attributes");
    assert_eq!(a.unpack().unwrap()["mail"], vec!["a@x"]);
    assert_eq!(subjects[1].attributes, None);
}

#[test]
fn id_falls_back_to_message_id_then_hash() {
    let body = br#"{"action":"delete","group":"g","subject":"s"}"#;
    assert_eq!(
        parse(body, Some("m-9")).map(|e| e.id),
        Ok("m-9".to_string())
    );
    let a = parse(body, None).map(|e| e.id);
    let b = parse(body, None).map(|e| e.id);
    assert_eq!(a, b);
}

#[test]
fn attributes_are_optional_and_single_values_become_lists() {
    let e =
        ok(r#"{"action":"update","group":"g","subject":"s","attributes":{"mail":"m@x","n":3}}"#);
    let Subjects::One { attributes, .. } = e.subjects else {
        panic!()
    };
    assert_eq!(attributes["mail"], vec!["m@x"]);
    assert_eq!(attributes["n"], vec!["3"]);
    ok(r#"{"action":"delete","group":"g","subject":"s"}"#);
}

#[test]
fn invalid_events_say_why() {
    let table: &[(&[u8], &str)] = &[
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1,2]", "expected a JSON object"),
        (br#"{"group":"g","subject":"s"}"#, "missing field `action`"),
        (
            br#"{"action":"rename","group":"g","subject":"s"}"#,
            "unknown action `rename`",
        ),
        (
            br#"{"action":"add","subject":"s"}"#,
            "missing field `group`",
        ),
        (
            br#"{"action":"add","group":"g"}"#,
            "missing field `subject`",
        ),
        (
            br#"{"action":"add","group":"g","subject":""}"#,
            "`subject` is empty",
        ),
        (
            br#"{"action":"add","group":7,"subject":"s"}"#,
            "`group` is a number",
        ),
        (
            br#"{"action":"add","group":"g","subject":"s","attributes":[1]}"#,
            "`attributes` is an array",
        ),
        (
            br#"{"action":"add","group":"g","subject":"s","attributes":{"mail":[{}]}}"#,
            "`attributes.mail[0]` is an object",
        ),
        (
            br#"{"action":"membership_sync","group":"g"}"#,
            "missing field `subjects`",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":"a b"}"#,
            "`subjects` is a string",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":[null]}"#,
            "`subjects[0]` is null",
        ),
        (
            br#"{"action":"add","group":"g","subject":"s","timestamp":"yesterday"}"#,
            "not RFC 3339",
        ),
        (
            br#"{"action":"add","group":"g","subject":"s","id":{}}"#,
            "`id` is an object",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":["a",""]}"#,
            "`subjects[1]` is empty",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":null}"#,
            "`subjects` is null, expected an array of strings",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":[],"attributes":[]}"#,
            "`attributes` is an array, expected an object of subject -> attributes",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":["a"],"attributes":{"a":"x"}}"#,
            "`attributes.a` is a string, expected an object of name -> list of strings",
        ),
        (
            br#"{"action":"membership_sync","group":"g","subjects":["a"],"attributes":{"a":{"m":{"x":1}}}}"#,
            "`attributes.a.m` is an object, expected a list of strings",
        ),
        (
            br#"{"action":"add","group":"g","subject":"s","attributes":7}"#,
            "`attributes` is a number, expected an object of name -> list of strings",
        ),
        (
            br#"{"action":"add","group":"g","subject":"s","id":""}"#,
            "`id` is a string, expected a non-empty string",
        ),
    ];
    for (body, expected) in table {
        let r = reason(body);
        assert!(
            r.contains(expected),
            "{:?}: {r}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn deep_nesting_and_huge_values_are_errors_not_crashes() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(reason(deep.as_bytes()).contains("not JSON"));
    let huge_action = format!(
        r#"{{"action":"{}","group":"g","subject":"s"}}"#,
        "x".repeat(1_000_000)
    );
    let r = reason(huge_action.as_bytes());
    assert!(r.len() < 200, "reason is clipped: {} chars", r.len());
}

#[test]
fn a_body_over_the_limit_is_invalid_without_being_read() {
    let body = br#"{"action":"add","group":"g","subject":"s"}"#;
    assert!(crate::event::parse_at_most(body, None, body.len()).is_ok());
    let e =
        crate::event::parse_at_most(body, Some("m-1"), body.len() - 1).expect_err("over the limit");
    assert!(e.reason.contains("max_event_bytes"), "{}", e.reason);
    assert_eq!(
        e.id, "m-1",
        "the id comes from the properties, not the body"
    );
}

#[test]
fn sync_attributes_are_normalised_packed_and_kept_for_listed_subjects_only() {
    let e = ok(
        r#"{"action":"membership_sync","group":"g","subjects":["A","b"],
        "attributes":{" a ":{"mail":"a@x","n":3,"flag":true,"none":null,"list":["x",2]},
                      "zed":{"mail":["z@x"]}}}"#,
    );
    let Subjects::All { subjects } = &e.subjects else {
        panic!("all")
    };
    assert_eq!(subjects.len(), 2, "zed is not listed");
    let a = subjects[0]
        .attributes
        .as_ref()
        .expect("a")
        .unpack()
        .unwrap();
    assert_eq!(a["mail"], ["a@x"]);
    assert_eq!(a["n"], ["3"]);
    assert_eq!(a["flag"], ["true"]);
    assert!(a["none"].is_empty());
    assert_eq!(a["list"], ["x", "2"]);
    // Attributes of a subject not listed are still checked.
    let r = reason(
        br#"{"action":"membership_sync","group":"g","subjects":["a"],"attributes":{"zed":{"mail":[{}]}}}"#,
    );
    assert!(r.contains("`attributes.zed.mail[0]` is an object"), "{r}");
}

#[test]
fn a_later_key_wins_as_in_json_objects() {
    let e = ok(r#"{"action":"delete","group":"g","subject":"first","subject":"second"}"#);
    assert_eq!(e.subject(), Some("second"));
}

#[test]
fn nesting_too_deep_anywhere_is_not_json() {
    // Deeper than serde_json's limit of 128, inside fields the event reads
    // and inside one it ignores: the body is not JSON, as before.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for field in ["extra", "id", "attributes"] {
        let body = format!(r#"{{"action":"add","group":"g","subject":"s","{field}":{deep}}}"#);
        let r = reason(body.as_bytes());
        assert!(
            r.contains("not JSON") && r.contains("recursion"),
            "{field}: {r}"
        );
    }
}
