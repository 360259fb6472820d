//! The mock SCIM provider: filter parsing (hostile values included), paging,
//! projection, PATCH semantics, uniqueness, and the HTTP side (content type,
//! request log, faults, authentication).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::*;
use crate::support::call::{client, send, Answer};
use crate::support::recorded::query_param;

const WAIT: Duration = Duration::from_secs(5);
const NOW: &str = "2024-01-01T00:00:00Z";

// ------------------------------------------------------------------ filters

fn filter(text: &str) -> Filter {
    match parse_filter(text) {
        Ok(f) => f,
        Err(e) => panic!("`{text}` should parse: {e:?}"),
    }
}

fn rejected(text: &str) -> ScimError {
    match parse_filter(text) {
        Ok(f) => panic!("`{text}` should be refused, parsed as {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_simple_eq_filter_parses() {
    let f = filter(r#"userName eq "jdoe""#);
    assert_eq!(f.attr, AttrRef::simple("userName"));
    assert_eq!(f.value, "jdoe");
    // Operators are case-insensitive; surrounding blanks are fine.
    assert_eq!(filter(r#"  userName EQ "jdoe"  "#).value, "jdoe");
    let f = filter(r#"emails.value eq "a@b.c""#);
    assert_eq!(f.attr.attr, "emails");
    assert_eq!(f.attr.sub.as_deref(), Some("value"));
    let f = filter(r#"displayName eq """#);
    assert_eq!(f.value, "");
}

#[test]
fn filter_values_are_json_string_literals() {
    assert_eq!(filter(r#"userName eq "a\"b""#).value, "a\"b");
    assert_eq!(filter(r#"userName eq "back\\slash""#).value, "back\\slash");
    assert_eq!(filter(r#"userName eq "\\""#).value, "\\");
    assert_eq!(filter(r#"userName eq "\u0041\n""#).value, "A\n");
    assert_eq!(filter(r#"userName eq "é ü""#).value, "é ü");
    // The hostile userName, escaped as it must be, is one value.
    let f = filter(r#"userName eq "x\" or userName pr or \"""#);
    assert_eq!(f.value, r#"x" or userName pr or ""#);
    // Brackets and parentheses inside a string are just characters.
    assert_eq!(
        filter(r##"userName eq "a) or (b] [""##).value,
        "a) or (b] ["
    );
}

#[test]
fn urn_qualified_attributes_parse() {
    let f = filter(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "42""#,
    );
    assert_eq!(
        f.attr.urn.as_deref(),
        Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
    );
    assert_eq!(f.attr.attr, "employeeNumber");
    let f = filter(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x""#);
    assert_eq!(
        f.attr,
        AttrRef::simple("userName"),
        "the core URN is dropped"
    );
    let f = filter(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m""#,
    );
    assert_eq!(f.attr.attr, "manager");
    assert_eq!(f.attr.sub.as_deref(), Some("value"));
}

#[test]
fn anything_but_one_eq_comparison_is_an_invalid_filter() {
    for text in [
        // The injection, unescaped: text after the value.
        r#"userName eq "x" or userName pr or """#,
        r#"userName eq "a" or userName eq "b""#,
        r#"userName eq "a" and active eq "true""#,
        r#"userName eq "a" "b""#,
        r#"userName eq "a"x"#,
        // Other operators and forms.
        "userName pr",
        r#"userName ne "a""#,
        r#"userName co "a""#,
        r#"userName sw "a""#,
        r#"userName gt "a""#,
        r#"not (userName eq "a")"#,
        r#"(userName eq "a")"#,
        r#"emails[type eq "work"] eq "a""#,
        r#"emails[type eq "work" and value eq "a"]"#,
        // Values that are not one well-formed string.
        "userName eq jdoe",
        "userName eq true",
        "userName eq 42",
        "userName eq null",
        r#"userName eq "unterminated"#,
        r#"userName eq "x\""#,
        r#"userName eq "bad \q escape""#,
        "userName eq \"raw\ncontrol\"",
        r#"userName eq"a""#,
        // Attribute paths.
        r#"user name eq "a""#,
        r#"1userName eq "a""#,
        r#"userName.x.y eq "a""#,
        r#"urn:x eq "a""#,
        r#"user"Name eq "a""#,
        "",
        "   ",
        "userName",
        "userName eq",
    ] {
        let e = rejected(text);
        assert_eq!(e.status, 400, "{text}");
        assert_eq!(e.scim_type, Some("invalidFilter"), "{text}: {e:?}");
    }
}

#[test]
fn list_queries_read_paging_and_projection() {
    let q = parse_list_query(Some(
        "filter=userName%20eq%20%22a%5C%22b%22&startIndex=3&count=7&attributes=userName,name.givenName",
    ))
    .unwrap();
    assert_eq!(q.filter.unwrap().value, "a\"b");
    assert_eq!((q.start, q.count), (3, 7));
    assert_eq!(q.projection.attributes.unwrap().len(), 2);
    let q = parse_list_query(None).unwrap();
    assert_eq!((q.start, q.count), (1, 100), "defaults");
    let q = parse_list_query(Some("startIndex=0&count=-5")).unwrap();
    assert_eq!(
        (q.start, q.count),
        (1, 0),
        "RFC 7644: < 1 means 1, negative means 0"
    );
    let q = parse_list_query(Some("count=99999")).unwrap();
    assert_eq!(q.count, 1000, "clamped");
    for bad in [
        "startIndex=one",
        "count=1.5",
        "attributes=user%20name",
        "filter=x",
    ] {
        assert_eq!(
            parse_list_query(Some(bad)).unwrap_err().status,
            400,
            "{bad}"
        );
    }
}

// -------------------------------------------------------------- store level

fn store_with_users(n: usize) -> Store {
    let mut s = Store::new("http://mock/scim/v2".into());
    for i in 0..n {
        s.seed_user(
            &format!("user{i:02}"),
            "G",
            "F",
            &format!("user{i:02}@example.edu"),
        );
    }
    s
}

fn list(s: &Store, query: &str) -> Value {
    s.list_users(&parse_list_query(Some(query)).unwrap())
        .unwrap()
        .body
        .unwrap()
}

fn names(page: &Value) -> Vec<String> {
    page["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn paging_is_one_based_with_totals() {
    let mut s = store_with_users(25);
    let p = list(&s, "startIndex=1&count=10");
    assert_eq!(p["schemas"], json!([LIST_SCHEMA]));
    assert_eq!(p["totalResults"], 25);
    assert_eq!(p["itemsPerPage"], 10);
    assert_eq!(p["startIndex"], 1);
    assert_eq!(names(&p)[0], "user00");
    let p = list(&s, "startIndex=21&count=10");
    assert_eq!(
        names(&p),
        ["user20", "user21", "user22", "user23", "user24"]
    );
    assert_eq!(p["itemsPerPage"], 5);
    let p = list(&s, "startIndex=26&count=10");
    assert_eq!(p["itemsPerPage"], 0);
    assert_eq!(p["Resources"], json!([]));
    let p = list(&s, "count=0");
    assert_eq!(p["totalResults"], 25);
    assert_eq!(p["Resources"], json!([]));

    // Fewer than asked, and no itemsPerPage: a client must move by what it got.
    s.page_cap = Some(3);
    s.omit_items_per_page = true;
    let p = list(&s, "startIndex=4&count=10");
    assert_eq!(names(&p), ["user03", "user04", "user05"]);
    assert!(p.get("itemsPerPage").is_none(), "{p}");
    assert_eq!(p["totalResults"], 25);
    assert_eq!(p["startIndex"], 4);
}

#[test]
fn filters_select_exactly_and_totals_count_the_filtered() {
    let mut s = store_with_users(3);
    s.seed_user("a\"b", "", "", "");
    s.seed_user("x\" or userName pr or \"", "", "", "");
    s.seed_user("Back\\Slash", "", "", "");
    let one = |s: &Store, v: &str| {
        let q = format!(
            "filter={}",
            percent_encoding::utf8_percent_encode(
                &format!("userName eq {}", serde_json::to_string(v).unwrap()),
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        names(&list(s, &q))
    };
    assert_eq!(one(&s, "a\"b"), ["a\"b"]);
    assert_eq!(
        one(&s, "x\" or userName pr or \""),
        ["x\" or userName pr or \""]
    );
    assert_eq!(
        one(&s, "back\\slash"),
        ["Back\\Slash"],
        "userName is case-insensitive"
    );
    assert_eq!(one(&s, "USER01"), ["user01"]);
    assert!(one(&s, "x").is_empty());
    assert!(one(&s, "a").is_empty());
    let p = list(&s, "filter=userName%20eq%20%22user02%22");
    assert_eq!(p["totalResults"], 1);
    // Emails (multi-valued: compares `value`), and sub-attribute paths.
    assert_eq!(
        names(&list(&s, "filter=emails%20eq%20%22USER00%40example.edu%22")),
        ["user00"]
    );
    assert_eq!(
        names(&list(
            &s,
            "filter=emails.value%20eq%20%22user01%40example.edu%22"
        )),
        ["user01"]
    );
    // id is case-exact.
    assert_eq!(
        names(&list(&s, "filter=id%20eq%20%22u-000001%22")),
        ["user00"]
    );
    assert!(names(&list(&s, "filter=id%20eq%20%22U-000001%22")).is_empty());
}

#[test]
fn projection_keeps_id_and_schemas() {
    let s = store_with_users(1);
    let p = list(&s, "attributes=userName");
    let r = &p["Resources"][0];
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "schemas", "userName"]);
    let p = list(&s, "attributes=name.givenName,emails.value");
    let r = &p["Resources"][0];
    assert_eq!(r["name"], json!({"givenName": "G"}));
    assert_eq!(r["emails"], json!([{"value": "user00@example.edu"}]));
    let p = list(&s, "excludedAttributes=emails,meta,id");
    let r = p["Resources"][0].as_object().unwrap();
    assert!(r.contains_key("id") && r.contains_key("userName") && r.contains_key("name"));
    assert!(!r.contains_key("emails") && !r.contains_key("meta"));
}

fn user_body(user_name: &str) -> Value {
    json!({"schemas": [USER_SCHEMA], "userName": user_name,
        "name": {"givenName": "John", "familyName": "Doe"},
        "emails": [{"value": "jdoe@example.edu", "type": "work", "primary": true}]})
}

#[test]
fn create_gives_id_and_meta_and_refuses_duplicates_case_insensitively() {
    let mut s = Store::new("http://mock/scim/v2".into());
    let ok = s.create_user(&user_body("jdoe"), NOW).unwrap();
    assert_eq!(ok.status, 201);
    let body = ok.body.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["meta"]["resourceType"], "User");
    assert_eq!(body["meta"]["created"], NOW);
    assert_eq!(
        body["meta"]["location"],
        format!("http://mock/scim/v2/Users/{id}")
    );
    assert_eq!(
        ok.location.as_deref(),
        Some(format!("http://mock/scim/v2/Users/{id}").as_str())
    );
    assert_eq!(body["active"], true, "active by default");

    let e = s.create_user(&user_body("JDOE"), NOW).unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some("uniqueness")));
    assert_eq!(
        e.body()["status"],
        "409",
        "status is a string in SCIM errors"
    );
    assert_eq!(e.body()["schemas"], json!([ERROR_SCHEMA]));
    assert_eq!(s.users.len(), 1);

    // A client-chosen id and meta are ignored; a password is never kept.
    let mut b = user_body("other");
    b["id"] = json!("chosen");
    b["password"] = json!("secret");
    let body = s.create_user(&b, NOW).unwrap().body.unwrap();
    assert_ne!(body["id"], "chosen");
    assert!(body.get("password").is_none());
}

#[test]
fn create_validates_the_resource() {
    let mut s = Store::new("http://mock".into());
    let cases = [
        (json!({"userName": "a"}), "invalidSyntax"),
        (json!({"schemas": [USER_SCHEMA]}), "invalidValue"),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "  "}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": 5}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "a", "active": "true"}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "a", "emails": "a@b"}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "a", "emails": [{"type": "work"}]}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "a", "emails": [
                {"value": "x", "primary": true}, {"value": "y", "primary": true}]}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "a", "name": "John"}),
            "invalidValue",
        ),
        (
            json!({"schemas": [USER_SCHEMA], "userName": "a",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "1"}}),
            "invalidValue",
        ),
        (json!(["not", "an", "object"]), "invalidSyntax"),
    ];
    for (body, scim_type) in cases {
        let e = s.create_user(&body, NOW).unwrap_err();
        assert_eq!((e.status, e.scim_type), (400, Some(scim_type)), "{body}");
    }
    assert!(s.users.is_empty());
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let ok = s
        .create_user(
            &json!({"schemas": [USER_SCHEMA, ext], "userName": "a", ext: {"employeeNumber": "1"}}),
            NOW,
        )
        .unwrap();
    assert_eq!(ok.body.unwrap()[ext]["employeeNumber"], "1");
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

fn seeded() -> (Store, String) {
    let mut s = Store::new("http://mock".into());
    let id = s.seed_user("jdoe", "John", "Doe", "jdoe@example.edu");
    (s, id)
}

fn user(s: &Store, id: &str) -> Value {
    Value::Object(s.users.get(id).unwrap().clone())
}

#[test]
fn patch_replace_with_a_path() {
    let (mut s, id) = seeded();
    let r = s
        .patch_user(
            &id,
            &patch(json!([{"op": "replace", "path": "active", "value": false}])),
            NOW,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(user(&s, &id)["active"], false);
    s.patch_user(
        &id,
        &patch(json!([
            {"op": "Replace", "path": "name.givenName", "value": "Johnny"},
            {"op": "replace", "path": "active", "value": true},
            {"op": "replace", "path": "emails", "value": [{"value": "new@example.edu", "type": "work", "primary": true}]},
        ])),
        NOW,
    )
    .unwrap();
    let u = user(&s, &id);
    assert_eq!(
        u["name"],
        json!({"givenName": "Johnny", "familyName": "Doe"})
    );
    assert_eq!(u["active"], true);
    assert_eq!(
        u["emails"],
        json!([{"value": "new@example.edu", "type": "work", "primary": true}])
    );
    // A value filter with a sub-attribute.
    s.patch_user(
        &id,
        &patch(json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w@example.edu"}])),
        NOW,
    )
    .unwrap();
    assert_eq!(user(&s, &id)["emails"][0]["value"], "w@example.edu");
    let e = s
        .patch_user(
            &id,
            &patch(
                json!([{"op": "replace", "path": "emails[type eq \"home\"].value", "value": "h"}]),
            ),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e.scim_type, Some("noTarget"));
}

#[test]
fn patch_without_a_path_merges_complex_attributes() {
    let (mut s, id) = seeded();
    s.patch_user(
        &id,
        &patch(json!([{"op": "replace", "value": {"name": {"givenName": "J"}, "displayName": "J Doe", "active": false}}])),
        NOW,
    )
    .unwrap();
    let u = user(&s, &id);
    assert_eq!(
        u["name"],
        json!({"givenName": "J", "familyName": "Doe"}),
        "familyName kept"
    );
    assert_eq!(u["displayName"], "J Doe");
    assert_eq!(u["active"], false);
    // `add` without path appends to multi-valued attributes, skipping equal values.
    s.patch_user(
        &id,
        &patch(json!([{"op": "add", "value": {"emails": [{"value": "jdoe@example.edu"}, {"value": "two@example.edu", "type": "home"}], "active": true}}])),
        NOW,
    )
    .unwrap();
    let u = user(&s, &id);
    assert_eq!(u["emails"].as_array().unwrap().len(), 2, "{u}");
    assert_eq!(u["active"], true);
    // An extension object without path: merged, and its URN listed in schemas.
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    s.patch_user(
        &id,
        &patch(json!([{"op": "add", "value": {ext: {"employeeNumber": "7"}}}])),
        NOW,
    )
    .unwrap();
    let u = user(&s, &id);
    assert_eq!(u[ext]["employeeNumber"], "7");
    assert!(u["schemas"].as_array().unwrap().contains(&json!(ext)));
}

#[test]
fn patch_add_and_remove_with_paths() {
    let (mut s, id) = seeded();
    let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    s.patch_user(
        &id,
        &patch(json!([
            {"op": "add", "path": "emails", "value": [{"value": "b@example.edu", "type": "home"}]},
            {"op": "add", "path": "title", "value": "Dr"},
            {"op": "replace", "path": format!("{ext}:employeeNumber"), "value": "42"},
            {"op": "add", "path": format!("{ext}:manager.value"), "value": "boss"},
        ])),
        NOW,
    )
    .unwrap();
    let u = user(&s, &id);
    assert_eq!(u["emails"].as_array().unwrap().len(), 2);
    assert_eq!(u["title"], "Dr");
    assert_eq!(
        u[ext],
        json!({"employeeNumber": "42", "manager": {"value": "boss"}})
    );
    assert!(u["schemas"].as_array().unwrap().contains(&json!(ext)));
    s.patch_user(
        &id,
        &patch(json!([
            {"op": "remove", "path": "emails[type eq \"home\"]"},
            {"op": "remove", "path": "title"},
            {"op": "remove", "path": "name.familyName"},
        ])),
        NOW,
    )
    .unwrap();
    let u = user(&s, &id);
    assert_eq!(
        u["emails"],
        json!([{"value": "jdoe@example.edu", "type": "work", "primary": true}])
    );
    assert!(u.get("title").is_none());
    assert_eq!(u["name"], json!({"givenName": "John"}));
}

#[test]
fn patch_is_atomic_and_checked() {
    let (mut s, id) = seeded();
    s.seed_user("taken", "", "", "");
    let before = user(&s, &id);
    let cases = [
        // Second operation fails: the first is not applied either.
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"},
                   {"op": "replace", "path": "userName", "value": "TAKEN"}]),
            409,
            "uniqueness",
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            400,
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "meta", "value": {}}]),
            400,
            "mutability",
        ),
        (
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
            400,
            "mutability",
        ),
        (json!([{"op": "remove"}]), 400, "noTarget"),
        (
            json!([{"op": "move", "path": "title", "value": "x"}]),
            400,
            "invalidSyntax",
        ),
        (
            json!([{"path": "title", "value": "x"}]),
            400,
            "invalidSyntax",
        ),
        (
            json!([{"op": "replace", "path": "title"}]),
            400,
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "active", "value": "False"}]),
            400,
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "userName", "value": ""}]),
            400,
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq \"work\" or value pr]", "value": "x"}]),
            400,
            "invalidFilter",
        ),
        (
            json!([{"op": "replace", "path": "na me", "value": "x"}]),
            400,
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "value": "not an object"}]),
            400,
            "invalidValue",
        ),
        (json!([]), 400, "invalidSyntax"),
        (json!("nope"), 400, "invalidSyntax"),
    ];
    for (ops, status, scim_type) in cases {
        let e = s.patch_user(&id, &patch(ops.clone()), NOW).unwrap_err();
        assert_eq!(
            (e.status, e.scim_type),
            (status, Some(scim_type)),
            "{ops}: {e:?}"
        );
        assert_eq!(user(&s, &id), before, "{ops}: nothing applied");
    }
    // Without the PatchOp schema.
    let e = s
        .patch_user(
            &id,
            &json!({"Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e.scim_type, Some("invalidSyntax"));
    let e = s.patch_user(
        "u-999999",
        &patch(json!([{"op": "replace", "path": "title", "value": "x"}])),
        NOW,
    );
    assert_eq!(e.unwrap_err().status, 404);
    // Renaming to the own name in another case is fine.
    s.patch_user(
        &id,
        &patch(json!([{"op": "replace", "path": "userName", "value": "JDoe"}])),
        NOW,
    )
    .unwrap();
    assert_eq!(user(&s, &id)["userName"], "JDoe");
}

#[test]
fn put_replaces_the_resource_keeping_id_and_created() {
    let (mut s, id) = seeded();
    s.seed_user("taken", "", "", "");
    let created = user(&s, &id)["meta"]["created"].clone();
    let r = s
        .replace_user(
            &id,
            &json!({"schemas": [USER_SCHEMA], "userName": "jdoe", "displayName": "Only"}),
            NOW,
        )
        .unwrap();
    let body = r.body.unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["meta"]["created"], created);
    assert!(
        body.get("name").is_none() && body.get("emails").is_none(),
        "replaced: {body}"
    );
    let e = s
        .replace_user(
            &id,
            &json!({"schemas": [USER_SCHEMA], "userName": "Taken"}),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e.status, 409);
    let e = s.replace_user("nope", &user_body("x"), NOW).unwrap_err();
    assert_eq!(e.status, 404);
}

#[test]
fn delete_removes_the_user_and_its_memberships() {
    let (mut s, id) = seeded();
    s.seed_group("Staff");
    assert!(s.membership("Staff", "jdoe", true));
    assert_eq!(s.delete_user(&id).unwrap().status, 204);
    assert!(s.members("Staff").is_empty());
    let e = s.delete_user(&id).unwrap_err();
    assert_eq!(e.status, 404);
    assert_eq!(e.body()["schemas"], json!([ERROR_SCHEMA]));
}

fn group_json(s: &Store, id: &str) -> Value {
    s.get_group(id, &Projection::default())
        .unwrap()
        .body
        .unwrap()
}

#[test]
fn groups_are_created_unique_and_show_members_with_their_user_names() {
    let mut s = store_with_users(3);
    let r = s
        .create_group(
            &json!({"schemas": [GROUP_SCHEMA], "displayName": "Staff", "members": [{"value": "u-000001"}]}),
            NOW,
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let g = r.body.unwrap();
    let gid = g["id"].as_str().unwrap().to_string();
    assert_eq!(g["meta"]["resourceType"], "Group");
    assert_eq!(g["members"][0]["value"], "u-000001");
    assert_eq!(g["members"][0]["display"], "user00");
    let e = s
        .create_group(
            &json!({"schemas": [GROUP_SCHEMA], "displayName": "STAFF"}),
            NOW,
        )
        .unwrap_err();
    assert_eq!((e.status, e.scim_type), (409, Some("uniqueness")));
    let e = s
        .create_group(
            &json!({"schemas": [GROUP_SCHEMA], "displayName": "X", "members": [{"value": "ghost"}]}),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e.scim_type, Some("invalidValue"));
    let e = s
        .create_group(&json!({"displayName": "Y"}), NOW)
        .unwrap_err();
    assert_eq!(e.scim_type, Some("invalidSyntax"));
    assert_eq!(s.groups.len(), 1);

    // List: filter by displayName, projection leaves members out.
    s.seed_group("Other");
    let q = |query: &str| {
        s.list_groups(&parse_list_query(Some(query)).unwrap())
            .unwrap()
            .body
            .unwrap()
    };
    let p = q("filter=displayName%20eq%20%22staff%22");
    assert_eq!(p["totalResults"], 1);
    assert_eq!(p["Resources"][0]["id"], gid.as_str());
    assert!(p["Resources"][0]["members"].is_array());
    for query in ["attributes=displayName", "excludedAttributes=members"] {
        let p = q(query);
        assert_eq!(p["totalResults"], 2, "{query}");
        for r in p["Resources"].as_array().unwrap() {
            assert!(r.get("members").is_none(), "{query}: {r}");
            assert!(r.get("displayName").is_some() && r.get("id").is_some());
        }
    }
    let p = q("filter=members.value%20eq%20%22u-000001%22");
    assert_eq!(p["totalResults"], 1, "members.value is filterable");
    let single = s
        .get_group(
            &gid,
            &parse_projection(Some("excludedAttributes=members")).unwrap(),
        )
        .unwrap()
        .body
        .unwrap();
    assert!(single.get("members").is_none());
}

#[test]
fn group_patch_adds_idempotently_and_removes_by_value_filter() {
    let mut s = store_with_users(4);
    let gid = s.seed_group("Staff");
    let add = |ids: &[&str]| {
        let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
        patch(json!([{"op": "add", "path": "members", "value": members}]))
    };
    s.patch_group(&gid, &add(&["u-000001", "u-000002"]), NOW)
        .unwrap();
    s.patch_group(&gid, &add(&["u-000002", "u-000003"]), NOW)
        .unwrap();
    s.patch_group(&gid, &add(&["u-000002"]), NOW).unwrap();
    assert_eq!(s.members("Staff"), ["user00", "user01", "user02"]);
    assert_eq!(group_json(&s, &gid)["members"].as_array().unwrap().len(), 3);

    // An unknown user: refused as a whole.
    let e = s
        .patch_group(&gid, &add(&["u-000004", "ghost"]), NOW)
        .unwrap_err();
    assert_eq!(e.scim_type, Some("invalidValue"));
    assert_eq!(s.members("Staff").len(), 3);

    let remove =
        |id: &str| patch(json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]));
    let r = s.patch_group(&gid, &remove("u-000002"), NOW).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.members("Staff"), ["user00", "user02"]);
    let e = s.patch_group(&gid, &remove("u-000002"), NOW).unwrap_err();
    assert_eq!(
        (e.status, e.scim_type),
        (400, Some("noTarget")),
        "not a member"
    );
    // Member ids compare exactly.
    let e = s.patch_group(&gid, &remove("U-000001"), NOW).unwrap_err();
    assert_eq!(e.scim_type, Some("noTarget"));
    // Several removes in one PATCH.
    s.patch_group(
        &gid,
        &patch(
            json!([{"op": "remove", "path": "members[value eq \"u-000001\"]"},
                      {"op": "remove", "path": "members[value eq \"u-000003\"]"}]),
        ),
        NOW,
    )
    .unwrap();
    assert!(s.members("Staff").is_empty());

    // add without path, replace members, rename.
    s.patch_group(
        &gid,
        &patch(
            json!([{"op": "add", "value": {"members": [{"value": "u-000004"}]}},
                      {"op": "replace", "path": "displayName", "value": "Team"}]),
        ),
        NOW,
    )
    .unwrap();
    assert_eq!(s.members("Team"), ["user03"]);
    s.patch_group(
        &gid,
        &patch(json!([{"op": "replace", "path": "members", "value": [{"value": "u-000001"}]}])),
        NOW,
    )
    .unwrap();
    assert_eq!(s.members("Team"), ["user00"]);
    s.patch_group(
        &gid,
        &patch(json!([{"op": "remove", "path": "members"}])),
        NOW,
    )
    .unwrap();
    assert!(s.members("Team").is_empty());

    let e = s
        .patch_group("g-999999", &add(&["u-000001"]), NOW)
        .unwrap_err();
    assert_eq!(e.status, 404);
    let e = s
        .patch_group(
            &gid,
            &patch(json!([{"op": "replace", "path": "id", "value": "x"}])),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e.scim_type, Some("mutability"));
}

// --------------------------------------------------------------- over HTTP

async fn start() -> MockScim {
    match MockScim::start().await {
        Ok(m) => m,
        Err(e) => panic!("mock SCIM did not start: {e}"),
    }
}

async fn call(mock: &MockScim, method: Method, path: &str, body: Option<Value>) -> Answer {
    call_with(mock, method, path, body, None).await
}

async fn call_with(
    mock: &MockScim,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Answer {
    let mut req = client().request(method, format!("{}{path}", mock.url()));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(body.to_string());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    send(req).await
}

#[tokio::test]
async fn the_http_api_answers_in_scim_json_and_logs_requests() {
    let mock = start().await;
    assert!(mock.url().starts_with("http://127.0.0.1:") && mock.url().ends_with("/scim/v2"));
    let a = call(&mock, Method::POST, "/Users", Some(user_body("jdoe"))).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.header("content-type"), Some(SCIM_CONTENT_TYPE));
    let id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        a.header("location"),
        Some(format!("{}/Users/{id}", mock.url()).as_str())
    );

    let a = call(&mock, Method::POST, "/Users", Some(user_body("JDoe"))).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.header("content-type"), Some(SCIM_CONTENT_TYPE));
    assert_eq!(a.body["scimType"], "uniqueness");

    let a = call(
        &mock,
        Method::GET,
        "/Users?filter=userName%20eq%20%22JDOE%22",
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["totalResults"], 1);
    assert_eq!(a.body["Resources"][0]["id"], id.as_str());

    let a = call(
        &mock,
        Method::GET,
        "/Users?filter=userName%20eq%20%22x%22%20or%20userName%20pr",
        None,
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["scimType"], "invalidFilter");
    assert!(a.body.get("Resources").is_none());

    let a = call(
        &mock,
        Method::GET,
        &format!("/Users/{id}?attributes=userName"),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        json!({"id": id, "schemas": [USER_SCHEMA], "userName": "jdoe"})
    );

    let a = call(
        &mock,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(patch(
            json!([{"op": "replace", "path": "active", "value": false}]),
        )),
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(!mock.user("jdoe").unwrap().active);

    let a = call(
        &mock,
        Method::PUT,
        &format!("/Users/{id}"),
        Some(user_body("jdoe")),
    )
    .await;
    assert_eq!(a.status, 200);
    let u = mock.user("jdoe").unwrap();
    assert!(u.active, "PUT without active: active");
    assert_eq!(
        (u.given_name.as_deref(), u.family_name.as_deref()),
        (Some("John"), Some("Doe"))
    );
    assert_eq!(u.emails, ["jdoe@example.edu"]);

    let a = call(&mock, Method::POST, "/Users", None).await;
    assert_eq!(
        (a.status, a.body["scimType"].as_str()),
        (400, Some("invalidSyntax"))
    );
    let a = call(&mock, Method::GET, "/Nope", None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.header("content-type"), Some(SCIM_CONTENT_TYPE));
    let a = call(
        &mock,
        Method::POST,
        &format!("/Users/{id}"),
        Some(json!({})),
    )
    .await;
    assert_eq!(a.status, 405);

    let a = call(&mock, Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(a.status, 204);
    assert_eq!(a.body, Value::Null);
    let a = call(&mock, Method::DELETE, &format!("/Users/{id}"), None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["status"], "404");
    assert_eq!(a.header("content-type"), Some(SCIM_CONTENT_TYPE));

    // The log: raw path and query, body, headers, status.
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 12);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/scim/v2/Users");
    assert_eq!(reqs[0].body.as_ref().unwrap()["userName"], "jdoe");
    assert_eq!(
        reqs[0].header("Content-Type"),
        Some("application/scim+json")
    );
    assert_eq!(reqs[0].status, Some(201));
    assert_eq!(
        reqs[2].query.as_deref(),
        Some("filter=userName%20eq%20%22JDOE%22")
    );
    assert_eq!(
        query_param(&reqs[2], "filter").as_deref(),
        Some("userName eq \"JDOE\"")
    );
    assert_eq!(
        mock.request_lines()[2],
        "GET /scim/v2/Users?filter=userName%20eq%20%22JDOE%22"
    );
    assert!(reqs
        .windows(2)
        .all(|w| w[0].at <= w[1].at && w[0].seq < w[1].seq));
    mock.clear_requests();
    assert!(mock.requests().is_empty());
    mock.shutdown().await;
}

#[tokio::test]
async fn paging_over_http_with_a_short_page_cap() {
    let mock = start().await;
    for i in 0..12 {
        mock.add_user(&format!("p{i:02}"), "", "", "");
    }
    mock.set_page_cap(Some(5));
    mock.set_omit_items_per_page(true);
    // A client that moves by what it received reads everything exactly once.
    let (mut start, mut seen) = (1, Vec::new());
    loop {
        let a = call(
            &mock,
            Method::GET,
            &format!("/Users?startIndex={start}&count=10&attributes=userName"),
            None,
        )
        .await;
        assert_eq!(a.status, 200);
        assert!(a.body.get("itemsPerPage").is_none());
        assert_eq!(a.body["totalResults"], 12);
        let got = names(&a.body);
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 5);
        start += got.len();
        seen.extend(got);
    }
    let want: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, want);
    mock.set_page_cap(None);
    mock.set_omit_items_per_page(false);
    let a = call(&mock, Method::GET, "/Users?count=10", None).await;
    assert_eq!(a.body["itemsPerPage"], 10);
}

#[tokio::test]
async fn groups_over_http() {
    let mock = start().await;
    let a_id = mock.add_user("alice", "A", "L", "a@example.edu");
    mock.add_user("bob", "B", "O", "b@example.edu");
    let gid = mock.add_group("Staff");
    assert_eq!(mock.add_group("staff"), gid, "same name: same group");
    assert!(mock.add_member("Staff", "bob"));
    assert!(!mock.add_member("Staff", "nobody"));
    assert!(!mock.add_member("Nope", "bob"));

    let body = patch(json!([{"op": "add", "path": "members", "value": [{"value": a_id}]}]));
    for _ in 0..2 {
        let a = call(
            &mock,
            Method::PATCH,
            &format!("/Groups/{gid}"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(mock.members("Staff"), ["alice", "bob"]);
    let a = call(&mock, Method::GET, &format!("/Groups/{gid}"), None).await;
    let displays: Vec<&str> = a.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["display"].as_str().unwrap())
        .collect();
    assert_eq!(displays, ["alice", "bob"]);
    let a = call(
        &mock,
        Method::GET,
        "/Groups?filter=displayName%20eq%20%22Staff%22&attributes=displayName",
        None,
    )
    .await;
    assert_eq!(
        a.body["Resources"],
        json!([{"id": gid, "schemas": [GROUP_SCHEMA], "displayName": "Staff"}])
    );

    let a = call(
        &mock,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        Some(patch(
            json!([{"op": "remove", "path": format!("members[value eq \"{a_id}\"]")}]),
        )),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(mock.members("Staff"), ["bob"]);
    let a = call(&mock, Method::PATCH, "/Groups/g-404", Some(body)).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["schemas"], json!([ERROR_SCHEMA]));

    let a = call(
        &mock,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP_SCHEMA], "displayName": "New"})),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(mock.groups().len(), 2);
    assert_eq!(
        mock.group("new").unwrap().id,
        a.body["id"].as_str().unwrap()
    );
    assert!(mock.remove_member("Staff", "bob"));
    assert!(!mock.remove_member("Staff", "bob"), "not a member any more");
    assert!(mock.add_member("Staff", "bob"));
    assert!(mock.remove_user("bob"));
    assert!(mock.members("Staff").is_empty());
}

#[tokio::test]
async fn seeding_and_inspection() {
    let mock = start().await;
    let id = mock.add_user("JDoe", "John", "Doe", "jdoe@example.edu");
    let u = mock.user("jdoe").unwrap();
    assert_eq!(u.id, id);
    assert_eq!(u.user_name, "JDoe");
    assert!(u.active);
    assert_eq!(u.resource["emails"][0]["primary"], true);
    assert_eq!(
        mock.add_user("jdoe", "J", "D", ""),
        id,
        "same userName: same id"
    );
    let u = mock.user_by_id(&id).unwrap();
    assert_eq!(u.user_name, "jdoe", "the resource is replaced");
    assert_eq!(u.given_name.as_deref(), Some("J"));
    assert!(u.emails.is_empty());
    assert!(mock.set_active("jdoe", false));
    assert!(!mock.user("jdoe").unwrap().active);
    assert!(!mock.set_active("ghost", false));
    mock.add_user("Zed", "", "", "");
    mock.add_user("able", "", "", "");
    let names: Vec<String> = mock.users().into_iter().map(|u| u.user_name).collect();
    assert_eq!(names, ["Zed", "able", "jdoe"], "sorted by userName");
}

#[tokio::test]
async fn wait_until_sees_changes_made_over_http() {
    let mock = start().await;
    let url = mock.url();
    let task = tokio::spawn(async move {
        client()
            .post(format!("{url}/Users"))
            .body(user_body("late").to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert!(mock.wait_until(WAIT, |m| m.user("late").is_some()).await);
    assert_eq!(task.await.unwrap(), 201);
    assert!(
        !mock
            .wait_until(Duration::from_millis(50), |m| m.user("never").is_some())
            .await
    );
}

#[tokio::test]
async fn faults_and_bearer_authentication() {
    let mock = start().await;
    mock.require_bearer("s3cret");
    let a = call(&mock, Method::GET, "/Users", None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("content-type"), Some(SCIM_CONTENT_TYPE));
    let a = call_with(&mock, Method::GET, "/Users", None, Some("wrong")).await;
    assert_eq!(a.status, 401);
    let a = call_with(&mock, Method::GET, "/Users", None, Some("s3cret")).await;
    assert_eq!(a.status, 200);
    mock.fail_next(2, 503);
    for _ in 0..2 {
        let a = call_with(&mock, Method::GET, "/Users", None, Some("s3cret")).await;
        assert_eq!(a.status, 503);
    }
    assert_eq!(
        call_with(&mock, Method::GET, "/Users", None, Some("s3cret"))
            .await
            .status,
        200
    );
    mock.clear_auth();
    mock.fail_next(1, 500);
    mock.clear_faults();
    assert_eq!(call(&mock, Method::GET, "/Users", None).await.status, 200);
    let statuses: Vec<Option<u16>> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            Some(401),
            Some(401),
            Some(200),
            Some(503),
            Some(503),
            Some(200),
            Some(200)
        ]
    );
}
