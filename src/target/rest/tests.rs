use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value as Json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::config::RestConfig;
use super::mapping::{self, Vars};
use super::RestTarget;
use crate::config::problems::ConfigError;
use crate::config::{parse_provisioner, KindConfig, ProvisionerConfig};
use crate::http::HttpClient;
use crate::target::{
    Created, FailureClass, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
};

/// A `[rest]` description of a Zoom-style API, close to that of
/// provisioners/example.toml (whose `groups.members` also pages); each key is
/// in docs/configuration.md. The tests vary it a key at a time.
const EXAMPLE_API: &str = r#"
kind = "rest"
url_prefix = "https://api.example.com/v2"
provision_group = "app:example:users"
target_group_map = { "app:example:staff" = "Staff" }

[rest]
match = "{{ attributes.mail[0] | lower }}"

[rest.accounts.lookup]            # match value -> API ID
method = "GET"
url = "/users/{{ match }}"
ok = [200]
absent = [404]
id = "/id"

[rest.accounts.list]              # every remote account with its match value
method = "GET"
url = "/users?page_size=300"
items = "/users"
id = "/id"
match = "/email"
paging = { style = "page_number", param = "page_number", last_page = "/page_count" }
# other styles: { style = "offset", param = "startIndex", size_param = "count",
#   size = 100, total = "/totalResults" } and { style = "next_link", next = "/next" }

[rest.accounts.create]
method = "POST"
url = "/users"
body = { action = "create", user_info = { email = "{{ match }}", first_name = "{{ attributes.givenName[0] }}" } }
ok = [201]
exists = [409]
id = "/id"

[rest.accounts.update]
method = "PATCH"
url = "/users/{{ api_id }}"
body = { first_name = "{{ attributes.givenName[0] }}", last_name = "{{ attributes.sn[0] }}" }
ok = [204]

[rest.accounts.deprovision]
method = "DELETE"
url = "/users/{{ api_id }}"
ok = [204]
absent = [404]

[rest.groups.list]                # remote group name -> API ID
method = "GET"
url = "/groups"
items = "/groups"
id = "/id"
name = "/name"

[rest.groups.members]             # a remote group's members with match values
method = "GET"
url = "/groups/{{ group_id }}/members"
items = "/members"
id = "/id"
match = "/email"

[rest.groups.add_member]
method = "POST"
url = "/groups/{{ group_id }}/members"
body = { members = [{ id = "{{ api_id }}" }] }
ok = [201]

[rest.groups.remove_member]
method = "DELETE"
url = "/groups/{{ group_id }}/members/{{ api_id }}"
ok = [204]
absent = [404]
"#;

const EXAMPLE_LIST_PAGING: &str =
    r#"paging = { style = "page_number", param = "page_number", last_page = "/page_count" }"#;

fn parse(text: &str) -> Result<ProvisionerConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    match parse_provisioner(Path::new("/etc/p/example.toml"), text, &mut errors) {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors),
    }
}

fn rest_of(p: &ProvisionerConfig) -> RestConfig {
    match &p.kind {
        KindConfig::Rest(r) => r.clone(),
        other => panic!("expected kind rest, got {}", other.name()),
    }
}

/// [`EXAMPLE_API`] with its `[rest.accounts.list]` paging replaced.
fn with_paging(paging: &str) -> String {
    assert!(EXAMPLE_API.contains(EXAMPLE_LIST_PAGING));
    EXAMPLE_API.replace(EXAMPLE_LIST_PAGING, paging)
}

/// The keys of every error `text` gives; panics when it is valid.
fn error_keys(text: &str) -> Vec<(String, String)> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.into_iter().map(|e| (e.key, e.problem)).collect(),
    }
}

fn assert_error(text: &str, key: &str, fragment: &str) {
    let errors = error_keys(text);
    assert!(
        errors
            .iter()
            .any(|(k, problem)| k == key && problem.contains(fragment)),
        "no error at `{key}` containing {fragment:?}; got {errors:#?}"
    );
}

// ------------------------------------------------------------ configuration

#[test]
fn example_api_parses() {
    let p = parse(EXAMPLE_API).unwrap();
    let rest = rest_of(&p);
    let list = rest.accounts.list.as_ref().expect("no list");
    assert_eq!(
        list.paging,
        Some(super::config::Paging::PageNumber {
            param: "page_number".into(),
            last_page: Some("/page_count".into()),
        })
    );
    assert_eq!(list.items.as_deref(), Some("/users"));
    let create = rest.accounts.create.as_ref().expect("no create");
    assert_eq!(create.ok, vec![201]);
    assert_eq!(create.exists, vec![409]);
    assert!(rest.groups.create.is_none());
    // The defaults.
    let update = rest.accounts.update.as_ref().expect("no update");
    assert!(update.absent.is_empty() && update.exists.is_empty());
}

#[test]
fn the_other_paging_styles_parse() {
    for paging in [
        r#"paging = { style = "offset", param = "startIndex", size_param = "count", size = 100, total = "/totalResults" }"#,
        r#"paging = { style = "next_link", next = "/next" }"#,
    ] {
        if let Err(e) = parse(&with_paging(paging)) {
            panic!("{paging}: {e:#?}");
        }
    }
}

#[test]
fn ok_defaults_to_the_usual_success_statuses() {
    let text = EXAMPLE_API.replace(
        "body = { first_name = \"{{ attributes.givenName[0] }}\", last_name = \"{{ attributes.sn[0] }}\" }\nok = [204]",
        "body = { first_name = \"{{ attributes.givenName[0] }}\", last_name = \"{{ attributes.sn[0] }}\" }",
    );
    let p = parse(&text).unwrap();
    let update = rest_of(&p).accounts.update.expect("no update");
    assert_eq!(update.ok, vec![200, 201, 202, 204]);
}

#[test]
fn each_bad_input_names_its_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "method = \"POST\"\nurl = \"/users\"\nbody",
            "method = \"FETCH\"\nurl = \"/users\"\nbody",
            "rest.accounts.create.method",
            "FETCH",
        ),
        (
            "url = \"/users/{{ match }}\"",
            "url = \"/users/{{ match \"",
            "rest.accounts.lookup.url",
            "syntax",
        ),
        (
            "url = \"/users/{{ match }}\"",
            "url = \"/users/{{ api_id }}\"",
            "rest.accounts.lookup.url",
            "`api_id`",
        ),
        (
            "url = \"/users/{{ match }}\"",
            "url = \"users/{{ match }}\"",
            "rest.accounts.lookup.url",
            "start with `/`",
        ),
        (
            "email = \"{{ match }}\"",
            "email = \"{{ match | nosuchfilter }}\"",
            "rest.accounts.create.body.user_info.email",
            "nosuchfilter",
        ),
        (
            "email = \"{{ match }}\"",
            "email = \"{% if %}\"",
            "rest.accounts.create.body.user_info.email",
            "syntax",
        ),
        (
            "absent = [404]\nid = \"/id\"",
            "absent = [404]\nid = \"id\"",
            "rest.accounts.lookup.id",
            "not a JSON pointer",
        ),
        (
            "items = \"/users\"",
            "",
            "rest.accounts.list.items",
            "needs",
        ),
        (
            "id = \"/id\"\nmatch = \"/email\"\npaging",
            "id = \"/id\"\npaging",
            "rest.accounts.list.match",
            "needs",
        ),
        (
            "style = \"page_number\"",
            "style = \"cursor\"",
            "rest.accounts.list.paging.style",
            "cursor",
        ),
        (
            "last_page = \"/page_count\"",
            "last_page = \"/page_count\", next = \"/next\"",
            "rest.accounts.list.paging.next",
            "page_number",
        ),
        (
            "last_page = \"/page_count\"",
            "last_page = \"page_count\"",
            "rest.accounts.list.paging.last_page",
            "not a JSON pointer",
        ),
        (
            "ok = [201]\nexists = [409]",
            "ok = [201, 700]\nexists = [409]",
            "rest.accounts.create.ok",
            "700",
        ),
        (
            "ok = [201]\nexists = [409]",
            "ok = [201]\nexists = [201]",
            "rest.accounts.create.exists",
            "also in `ok`",
        ),
        (
            "last_name = \"{{ attributes.sn[0] }}\" }\nok = [204]",
            "last_name = \"{{ attributes.sn[0] }}\" }\nok = [204]\nabsent = [404]",
            "rest.accounts.update.absent",
            "accounts.update",
        ),
        (
            "url = \"/groups\"\nitems",
            "url = \"/groups\"\npaging = { style = \"next_link\" }\nitems",
            "rest.groups.list.paging.next",
            "needs `next`",
        ),
        (
            "name = \"/name\"",
            "",
            "rest.groups.list.name",
            "needs `name`",
        ),
        (
            "body = { members = [{ id = \"{{ api_id }}\" }] }",
            "body = \"{{ api_id }}\"",
            "rest.groups.add_member.body",
            "table or an array",
        ),
        (
            "match = \"{{ attributes.mail[0] | lower }}\"",
            "match = \"{{ api_id }}\"",
            "rest.match",
            "`api_id`",
        ),
    ];
    for (from, to, key, fragment) in cases {
        assert!(EXAMPLE_API.contains(from), "fixture lacks {from:?}");
        let text = EXAMPLE_API.replacen(from, to, 1);
        assert_error(&text, key, fragment);
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = EXAMPLE_API
        .replacen("method = \"PATCH\"", "method = \"PTACH\"", 1)
        .replacen("id = \"/id\"", "id = \"id\"", 1)
        .replacen("style = \"page_number\"", "style = \"pages\"", 1);
    let keys: Vec<String> = error_keys(&text).into_iter().map(|(k, _)| k).collect();
    for key in [
        "rest.accounts.update.method",
        "rest.accounts.lookup.id",
        "rest.accounts.list.paging.style",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let text = EXAMPLE_API.replacen("method = \"GET\"", "method = \"GET\"\nmetod = \"GET\"", 1);
    let errors = error_keys(&text);
    assert!(
        errors
            .iter()
            .any(|(k, p)| k == "metod" || p.contains("metod")),
        "{errors:?}"
    );
}

#[test]
fn missing_operations_are_named() {
    // A misspelt operation table is an unknown key (and the operation is missing).
    let misspelt = EXAMPLE_API.replacen("[rest.accounts.create]", "[rest.accounts.craete]", 1);
    assert_error(&misspelt, "rest.accounts.craete", "unknown field");

    let start = EXAMPLE_API.find("[rest.accounts.create]").unwrap();
    let end = EXAMPLE_API.find("[rest.accounts.update]").unwrap();
    let text = format!("{}{}", &EXAMPLE_API[..start], &EXAMPLE_API[end..]);
    assert_error(&text, "rest.accounts.create", "provision_group");

    let start = EXAMPLE_API.find("[rest.groups.members]").unwrap();
    let end = EXAMPLE_API.find("[rest.groups.add_member]").unwrap();
    let text = format!("{}{}", &EXAMPLE_API[..start], &EXAMPLE_API[end..]);
    assert_error(&text, "rest.groups.members", "target_group_map");

    // Group operations are not needed without a target_group_map.
    let start = EXAMPLE_API.find("[rest.groups.list]").unwrap();
    let text = EXAMPLE_API[..start].replace(
        "target_group_map = { \"app:example:staff\" = \"Staff\" }\n",
        "",
    );
    if let Err(e) = parse(&text) {
        panic!("{e:#?}");
    }
}

// ------------------------------------------------------------ pure mapping

fn rest_config() -> RestConfig {
    rest_of(&parse(EXAMPLE_API).unwrap())
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect()
}

#[test]
fn lookup_urls_encode_hostile_match_values() {
    let rest = rest_config();
    let Some(lookup) = &rest.accounts.lookup else {
        panic!("no lookup")
    };
    let long = "x".repeat(10 * 1024);
    let long_encoded = format!("/users/{long}");
    let cases: Vec<(&str, Result<&str, &str>)> = vec![
        ("jdoe@example.edu", Ok("/users/jdoe%40example.edu")),
        ("../admin", Ok("/users/..%2Fadmin")),
        ("a/b?c#d", Ok("/users/a%2Fb%3Fc%23d")),
        ("\" or \"1\"=\"1", Ok("/users/%22%20or%20%221%22%3D%221")),
        ("%2e%2e", Ok("/users/%252e%252e")),
        (
            "josé@exämple.edu",
            Ok("/users/jos%C3%A9%40ex%C3%A4mple.edu"),
        ),
        (long.as_str(), Ok(long_encoded.as_str())),
        ("..", Err("segment")),
        (".", Err("segment")),
        ("", Err("empty")),
    ];
    for (value, want) in cases {
        let vars = Vars {
            match_value: Some(value),
            ..Vars::default()
        };
        let got = rest.templates.render_url(&lookup.url, &vars.context());
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "value {value:?}"),
            (Err(fragment), Err(e)) => assert!(e.contains(fragment), "value {value:?}: {e}"),
            (w, g) => panic!(
                "value {:?}: wanted {w:?}, got {g:?}",
                &value[..value.len().min(20)]
            ),
        }
    }
}

#[test]
fn bodies_are_built_structurally() {
    let rest = rest_config();
    let Some(create) = &rest.accounts.create else {
        panic!("no create")
    };
    let Some(body) = &create.body else {
        panic!("no body")
    };
    let hostile = "\", \"role\": \"admin";
    let a = attrs(&[("givenName", hostile)]);
    let vars = Vars {
        match_value: Some("a\"b\\c\n{{ x }}"),
        attributes: Some(&a),
        ..Vars::default()
    };
    let built = rest.templates.render_body(body, &vars.context()).unwrap();
    assert_eq!(
        built,
        json!({"action": "create", "user_info": {"email": "a\"b\\c\n{{ x }}", "first_name": hostile}})
    );

    // Missing attributes render empty; numbers and booleans stay typed.
    let text = EXAMPLE_API.replacen(
        "body = { first_name = \"{{ attributes.givenName[0] }}\", last_name = \"{{ attributes.sn[0] }}\" }",
        "body = { first_name = \"{{ attributes.givenName[0] }}\", n = 3, x = 1.5, on = true, tags = [\"a\", \"{{ api_id }}\"] }",
        1,
    );
    let rest = rest_of(&parse(&text).unwrap());
    let Some(body) = rest.accounts.update.as_ref().and_then(|u| u.body.as_ref()) else {
        panic!("no update body")
    };
    let empty = BTreeMap::new();
    let vars = Vars {
        api_id: Some("7"),
        attributes: Some(&empty),
        ..Vars::default()
    };
    let built = rest.templates.render_body(body, &vars.context()).unwrap();
    assert_eq!(
        built,
        json!({"first_name": "", "n": 3, "x": 1.5, "on": true, "tags": ["a", "7"]})
    );
}

#[test]
fn pointers_read_strings_and_numbers() {
    let doc = json!({"id": 42, "big": 18446744073709551615u64, "neg": -3, "s": "abc", "e": "",
                     "n": null, "o": {"a/b": {"~x": "deep"}}, "b": true, "arr": [{"id": "z"}]});
    let cases: &[(&str, Option<&str>)] = &[
        ("/id", Some("42")),
        ("/big", Some("18446744073709551615")),
        ("/neg", Some("-3")),
        ("/s", Some("abc")),
        ("/e", None),
        ("/n", None),
        ("/b", None),
        ("/o", None),
        ("/missing", None),
        ("/o/a~1b/~0x", Some("deep")),
        ("/arr/0/id", Some("z")),
    ];
    for (ptr, want) in cases {
        assert_eq!(mapping::pointer_text(&doc, ptr).as_deref(), *want, "{ptr}");
    }
    assert_eq!(mapping::pointer_count(&json!({"c": "12"}), "/c"), Some(12));
    assert_eq!(mapping::pointer_count(&json!({"c": 3}), "/c"), Some(3));
    assert_eq!(mapping::pointer_count(&json!({"c": -3}), "/c"), None);
}

#[test]
fn list_items_are_read_and_bad_ones_skipped() {
    let doc = json!({"users": [
        {"id": 1, "email": "A@X.EDU"},
        {"id": "2"},
        {"email": "c@x.edu"},
        {"id": "4", "email": "d@x.edu"}
    ]});
    let items = mapping::items(&doc, "/users").unwrap();
    let accounts: Vec<RemoteAccount> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| mapping::account("accounts.list", i, item, "/id", "/email"))
        .collect();
    assert_eq!(
        accounts,
        vec![
            RemoteAccount {
                api_id: "1".into(),
                match_value: "a@x.edu".into(),
                in_step: false,
            },
            RemoteAccount {
                api_id: "4".into(),
                match_value: "d@x.edu".into(),
                in_step: false,
            },
        ]
    );
    assert_eq!(
        mapping::items(&json!({}), "/users").map(<[Json]>::len),
        Ok(0)
    );
    assert_eq!(
        mapping::items(&json!({"users": null}), "/users").map(<[Json]>::len),
        Ok(0)
    );
    assert_eq!(mapping::items(&json!([1, 2]), "").map(<[Json]>::len), Ok(2));
    assert!(mapping::items(&json!({"users": {}}), "/users").is_err());
}

#[test]
fn query_params_are_set_once() {
    let cases = [
        ("/users", "page", "2", "/users?page=2"),
        (
            "/users?page_size=300",
            "page_number",
            "2",
            "/users?page_size=300&page_number=2",
        ),
        (
            "/users?page_number=1&a=b",
            "page_number",
            "3",
            "/users?a=b&page_number=3",
        ),
        ("/users?", "p", "1", "/users?p=1"),
        (
            "/users?page_numberx=1",
            "page_number",
            "1",
            "/users?page_numberx=1&page_number=1",
        ),
    ];
    for (input, name, value, want) in cases {
        assert_eq!(
            mapping::set_query_param(input, name, value),
            want,
            "{input}"
        );
    }
}

#[test]
fn next_links_stay_on_the_prefix_host() {
    let prefixes = vec!["https://api.example.com/v2".to_string()];
    let cases: &[(&str, &str, Result<&str, &str>)] = &[
        (
            "/users",
            "https://api.example.com/v2/users?cursor=b",
            Ok("/users?cursor=b"),
        ),
        ("/users", "/v2/users?cursor=b", Ok("/users?cursor=b")),
        ("/users?x=1", "?cursor=c", Ok("/users?cursor=c")),
        (
            "/users",
            "https://api.example.com/other?c=1",
            Ok("https://api.example.com/other?c=1"),
        ),
        (
            "/users",
            "HTTPS://API.EXAMPLE.COM/v2/users?c=1",
            Ok("/users?c=1"),
        ),
        (
            "/users",
            "https://evil.example.net/v2/users",
            Err("evil.example.net"),
        ),
        (
            "/users",
            "http://api.example.com/v2/users",
            Err("api.example.com"),
        ),
        (
            "/users",
            "https://api.example.com:8443/v2/users",
            Err("api.example.com"),
        ),
        ("/users", "//evil.example.net/x", Err("evil.example.net")),
        (
            "https://api.example.com/other?c=1",
            "?c=2",
            Ok("https://api.example.com/other?c=2"),
        ),
    ];
    for (current, link, want) in cases {
        let got = mapping::resolve_link(&prefixes, current, link);
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "{link}"),
            (Err(fragment), Err(e)) => assert!(e.contains(fragment), "{link}: {e}"),
            _ => panic!("{link}: wanted {want:?}, got {got:?}"),
        }
    }
}

// ------------------------------------------------------------ against a mock API

struct Fixture {
    server: MockServer,
    target: RestTarget,
}

async fn fixture(text: &str) -> Fixture {
    let server = MockServer::start().await;
    let text = text.replacen(
        "url_prefix = \"https://api.example.com/v2\"",
        &format!("url_prefix = \"{}/v2\"", server.uri()),
        1,
    );
    let p = parse(&text).unwrap();
    let http = HttpClient::new(&crate::assembly::http_settings(&p)).unwrap();
    Fixture {
        server,
        target: RestTarget::new(rest_of(&p), http),
    }
}

/// What the mock received: method, path?query, JSON body.
async fn received(f: &Fixture) -> Vec<(String, String, Option<Json>)> {
    f.server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let target = match r.url.query() {
                Some(q) => format!("{}?{q}", r.url.path()),
                None => r.url.path().to_string(),
            };
            let body = (!r.body.is_empty())
                .then(|| serde_json::from_slice(&r.body).expect("body not JSON"));
            (r.method.to_string(), target, body)
        })
        .collect()
}

fn req(m: &str, target: &str, body: Option<Json>) -> (String, String, Option<Json>) {
    (m.to_string(), target.to_string(), body)
}

fn subject(match_value: &str, a: &[(&str, &str)]) -> SubjectContext {
    SubjectContext {
        subject: "jdoe".into(),
        match_value: match_value.into(),
        attributes: attrs(a),
        actor: None,
    }
}

fn staff() -> RemoteGroup {
    RemoteGroup {
        name: "Staff".into(),
        api_id: "g1".into(),
    }
}

#[tokio::test]
async fn match_value_follows_the_template() {
    let f = fixture(EXAMPLE_API).await;
    let a = attrs(&[("mail", "JDoe@Example.EDU")]);
    assert_eq!(
        f.target.match_value("jdoe", &a).ok().as_deref(),
        Some("jdoe@example.edu")
    );
    let e = f.target.match_value("jdoe", &BTreeMap::new()).err();
    assert!(
        matches!(&e, Some(e) if e.class == FailureClass::Permanent && e.message.contains("empty")),
        "{e:?}"
    );

    let default = EXAMPLE_API.replacen("match = \"{{ attributes.mail[0] | lower }}\"\n", "", 1);
    let f = fixture(&default).await;
    assert_eq!(
        f.target.match_value("JDoe", &a).ok().as_deref(),
        Some("jdoe")
    );
}

#[tokio::test]
async fn lookup_finds_absent_and_fails() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("GET"))
        .and(path("/v2/users/jdoe%40example.edu"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 42, "email": "x"})))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/users/..%2Fadmin"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/users/busy"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "7"))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/users/bad"))
        .respond_with(ResponseTemplate::new(400).set_body_string("no such thing"))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/users/noid"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"email": "noid"})))
        .mount(&f.server)
        .await;

    let t = &f.target;
    assert_eq!(
        t.lookup_account(&subject("jdoe@example.edu", &[]))
            .await
            .ok()
            .map(|found| found.map(|f| f.api_id)),
        Some(Some("42".into()))
    );
    assert_eq!(
        t.lookup_account(&subject("../admin", &[])).await.ok(),
        Some(None)
    );
    let busy = t.lookup_account(&subject("busy", &[])).await.err();
    assert!(
        matches!(&busy, Some(e) if e.is_transient() && e.status == Some(503)
            && e.retry_after == Some(std::time::Duration::from_secs(7))),
        "{busy:?}"
    );
    let bad = t.lookup_account(&subject("bad", &[])).await.err();
    assert!(
        matches!(&bad, Some(e) if e.class == FailureClass::Permanent && e.status == Some(400)
            && e.message.contains("accounts.lookup")),
        "{bad:?}"
    );
    let noid = t.lookup_account(&subject("noid", &[])).await.err();
    assert!(
        matches!(&noid, Some(e) if e.message.contains("`/id`")),
        "{noid:?}"
    );
    // `..` is refused before any request.
    let dots = t.lookup_account(&subject("..", &[])).await.err();
    assert!(
        matches!(&dots, Some(e) if e.class == FailureClass::Permanent),
        "{dots:?}"
    );

    assert_eq!(
        received(&f).await,
        vec![
            req("GET", "/v2/users/jdoe%40example.edu", None),
            req("GET", "/v2/users/..%2Fadmin", None),
            req("GET", "/v2/users/busy", None),
            req("GET", "/v2/users/bad", None),
            req("GET", "/v2/users/noid", None),
        ]
    );
}

#[tokio::test]
async fn lookup_by_search_picks_the_matching_item() {
    let text = EXAMPLE_API.replacen(
        "url = \"/users/{{ match }}\"\nok = [200]\nabsent = [404]\nid = \"/id\"",
        "url = \"/users?email={{ match }}\"\nok = [200]\nitems = \"/users\"\nid = \"/id\"\nmatch = \"/email\"",
        1,
    );
    let f = fixture(&text).await;
    Mock::given(method("GET"))
        .and(path("/v2/users"))
        .and(query_param("email", "a&b@x.edu"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"users": [{"id": 1, "email": "other@x.edu"}, {"id": 2, "email": "A&B@x.edu"}]}),
        ))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/users"))
        .and(query_param("email", "nobody@x.edu"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"users": []})))
        .mount(&f.server)
        .await;
    let t = &f.target;
    assert_eq!(
        t.lookup_account(&subject("a&b@x.edu", &[]))
            .await
            .ok()
            .map(|found| found.map(|f| f.api_id)),
        Some(Some("2".into()))
    );
    assert_eq!(
        t.lookup_account(&subject("nobody@x.edu", &[])).await.ok(),
        Some(None)
    );
    assert_eq!(
        received(&f).await,
        vec![
            req("GET", "/v2/users?email=a%26b%40x.edu", None),
            req("GET", "/v2/users?email=nobody%40x.edu", None),
        ]
    );
}

#[tokio::test]
async fn create_sends_the_body_and_reads_the_id() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("POST"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "u-1"})))
        .up_to_n_times(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({"code": 1005})))
        .up_to_n_times(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(422).set_body_string("invalid email"))
        .mount(&f.server)
        .await;
    let t = &f.target;
    let ctx = subject("jdoe@example.edu", &[("givenName", "John \"J\" <x>")]);
    assert_eq!(
        t.create_account(&ctx).await.ok(),
        Some(Created::New(Some("u-1".into())))
    );
    assert_eq!(
        t.create_account(&ctx).await.ok(),
        Some(Created::AlreadyExists)
    );
    let e = t.create_account(&ctx).await.err();
    assert!(
        matches!(&e, Some(e) if e.class == FailureClass::Permanent && e.status == Some(422)
            && e.message.contains("invalid email")),
        "{e:?}"
    );
    let body = json!({"action": "create", "user_info": {"email": "jdoe@example.edu", "first_name": "John \"J\" <x>"}});
    assert_eq!(
        received(&f).await,
        vec![
            req("POST", "/v2/users", Some(body.clone())),
            req("POST", "/v2/users", Some(body.clone())),
            req("POST", "/v2/users", Some(body)),
        ]
    );
}

#[tokio::test]
async fn update_and_deprovision_address_the_api_id() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("PATCH"))
        .and(path("/v2/users/u%2F1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/v2/users/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/users/u%2F1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/users/gone"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/users/locked"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&f.server)
        .await;
    let t = &f.target;
    let ctx = subject("jdoe@example.edu", &[("givenName", "John")]);
    assert!(t.update_account("u/1", &ctx).await.is_ok());
    // The engine drops a stale cached ID on a 404 from update.
    let gone = t.update_account("gone", &ctx).await.err();
    assert!(
        matches!(&gone, Some(e) if e.status == Some(404)),
        "{gone:?}"
    );
    // A 404 (the operation's `absent`) is no error, but the engine is told.
    assert_eq!(
        t.deprovision_account("u/1", &ctx).await.ok(),
        Some(Removal::Removed)
    );
    assert_eq!(
        t.deprovision_account("gone", &ctx).await.ok(),
        Some(Removal::Absent)
    );
    let locked = t.deprovision_account("locked", &ctx).await.err();
    assert!(
        matches!(&locked, Some(e) if e.class == FailureClass::Permanent && e.status == Some(403)),
        "{locked:?}"
    );
    let patch = json!({"first_name": "John", "last_name": ""});
    assert_eq!(
        received(&f).await,
        vec![
            req("PATCH", "/v2/users/u%2F1", Some(patch.clone())),
            req("PATCH", "/v2/users/gone", Some(patch)),
            req("DELETE", "/v2/users/u%2F1", None),
            req("DELETE", "/v2/users/gone", None),
            req("DELETE", "/v2/users/locked", None),
        ]
    );
}

fn user(i: u32) -> Json {
    json!({"id": i, "email": format!("User{i}@X.edu")})
}

fn accounts(ids: std::ops::RangeInclusive<u32>) -> Vec<RemoteAccount> {
    ids.map(|i| RemoteAccount {
        api_id: i.to_string(),
        match_value: format!("user{i}@x.edu"),
        in_step: false,
    })
    .collect()
}

#[tokio::test]
async fn list_follows_page_numbers() {
    let f = fixture(EXAMPLE_API).await;
    for (page, users) in [
        ("1", vec![user(1), user(2)]),
        ("2", vec![user(3), user(4)]),
        ("3", vec![user(5)]),
    ] {
        Mock::given(method("GET"))
            .and(path("/v2/users"))
            .and(query_param("page_number", page))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"page_count": 3, "users": users})),
            )
            .mount(&f.server)
            .await;
    }
    let listed = f.target.list_accounts(None).await.unwrap();
    assert_eq!(listed, accounts(1..=5));
    assert_eq!(
        received(&f).await,
        vec![
            req("GET", "/v2/users?page_size=300&page_number=1", None),
            req("GET", "/v2/users?page_size=300&page_number=2", None),
            req("GET", "/v2/users?page_size=300&page_number=3", None),
        ]
    );
}

#[tokio::test]
async fn list_without_a_page_count_stops_at_an_empty_page() {
    let f = fixture(&with_paging(
        r#"paging = { style = "page_number", param = "page" }"#,
    ))
    .await;
    for (page, users) in [("1", vec![user(1)]), ("2", vec![user(2)]), ("3", vec![])] {
        Mock::given(method("GET"))
            .and(query_param("page", page))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"users": users})))
            .mount(&f.server)
            .await;
    }
    assert_eq!(
        f.target.list_accounts(None).await.ok(),
        Some(accounts(1..=2))
    );
    assert_eq!(received(&f).await.len(), 3);
}

#[tokio::test]
async fn list_follows_offsets() {
    let f = fixture(&with_paging(
        r#"paging = { style = "offset", param = "startIndex", size_param = "count", size = 2, start = 1, total = "/totalResults" }"#,
    ))
    .await;
    for (start, users) in [
        ("1", vec![user(1), user(2)]),
        ("3", vec![user(3), user(4)]),
        ("5", vec![user(5)]),
    ] {
        Mock::given(method("GET"))
            .and(query_param("startIndex", start))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"totalResults": 5, "users": users})),
            )
            .mount(&f.server)
            .await;
    }
    assert_eq!(
        f.target.list_accounts(None).await.ok(),
        Some(accounts(1..=5))
    );
    assert_eq!(
        received(&f).await,
        vec![
            req("GET", "/v2/users?page_size=300&startIndex=1&count=2", None),
            req("GET", "/v2/users?page_size=300&startIndex=3&count=2", None),
            req("GET", "/v2/users?page_size=300&startIndex=5&count=2", None),
        ]
    );
}

#[tokio::test]
async fn offsets_without_a_total_stop_at_a_short_page() {
    let f = fixture(&with_paging(
        r#"paging = { style = "offset", param = "offset", size_param = "limit", size = 2 }"#,
    ))
    .await;
    for (offset, users) in [
        ("0", vec![user(1), user(2)]),
        ("2", vec![user(3), user(4)]),
        ("4", vec![user(5)]),
    ] {
        Mock::given(method("GET"))
            .and(query_param("offset", offset))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"users": users})))
            .mount(&f.server)
            .await;
    }
    assert_eq!(
        f.target.list_accounts(None).await.ok(),
        Some(accounts(1..=5))
    );
    let targets: Vec<String> = received(&f).await.into_iter().map(|r| r.1).collect();
    assert_eq!(
        targets,
        vec![
            "/v2/users?page_size=300&offset=0&limit=2",
            "/v2/users?page_size=300&offset=2&limit=2",
            "/v2/users?page_size=300&offset=4&limit=2",
        ]
    );
}

#[tokio::test]
async fn list_follows_next_links() {
    let f = fixture(&with_paging(
        r#"paging = { style = "next_link", next = "/links/next" }"#,
    ))
    .await;
    let absolute = format!("{}/v2/users?cursor=b", f.server.uri());
    Mock::given(method("GET"))
        .and(path("/v2/users"))
        .and(query_param("page_size", "300"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"users": [user(1), user(2)], "links": {"next": absolute}})),
        )
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("cursor", "b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"users": [user(3), user(4)], "links": {"next": "/v2/users?cursor=c%2Fd"}}),
        ))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("cursor", "c/d"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"users": [user(5)], "links": {"next": null}})),
        )
        .mount(&f.server)
        .await;
    assert_eq!(
        f.target.list_accounts(None).await.ok(),
        Some(accounts(1..=5))
    );
    assert_eq!(
        received(&f).await,
        vec![
            req("GET", "/v2/users?page_size=300", None),
            req("GET", "/v2/users?cursor=b", None),
            req("GET", "/v2/users?cursor=c%2Fd", None),
        ]
    );
}

#[tokio::test]
async fn next_links_to_another_host_or_in_circles_are_refused() {
    let f = fixture(&with_paging(
        r#"paging = { style = "next_link", next = "/next" }"#,
    ))
    .await;
    Mock::given(method("GET"))
        .and(query_param("page_size", "300"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"users": [user(1)], "next": "https://evil.example.net/v2/users?page=2"}),
        ))
        .mount(&f.server)
        .await;
    let e = f.target.list_accounts(None).await.err();
    assert!(
        matches!(&e, Some(e) if e.class == FailureClass::Permanent && e.message.contains("evil.example.net")),
        "{e:?}"
    );
    assert_eq!(received(&f).await.len(), 1);

    let f = fixture(&with_paging(
        r#"paging = { style = "next_link", next = "/next" }"#,
    ))
    .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"users": [user(1)], "next": "/v2/users?page_size=300"})),
        )
        .mount(&f.server)
        .await;
    let e = f.target.list_accounts(None).await.err();
    assert!(
        matches!(&e, Some(e) if e.message.contains("repeats")),
        "{e:?}"
    );
    assert_eq!(received(&f).await.len(), 1);
}

#[tokio::test]
async fn a_failing_page_fails_the_whole_list() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("GET"))
        .and(query_param("page_number", "1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"page_count": 2, "users": [user(1)]})),
        )
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("page_number", "2"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&f.server)
        .await;
    let e = f.target.list_accounts(None).await.err();
    assert!(
        matches!(&e, Some(e) if e.is_transient() && e.status == Some(502)),
        "{e:?}"
    );
}

#[tokio::test]
async fn groups_are_listed_with_name_and_id() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("GET"))
        .and(path("/v2/groups"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"groups": [
            {"id": 7, "name": "Staff"}, {"id": "g2", "name": "Admins"}, {"name": "no id"}
        ]})))
        .mount(&f.server)
        .await;
    assert_eq!(
        f.target.list_groups().await.ok(),
        Some(vec![
            RemoteGroup {
                name: "Staff".into(),
                api_id: "7".into()
            },
            RemoteGroup {
                name: "Admins".into(),
                api_id: "g2".into()
            },
        ])
    );
    // No groups.create configured: nothing is created.
    assert_eq!(f.target.create_group("New").await.ok(), Some(None));
    assert_eq!(received(&f).await, vec![req("GET", "/v2/groups", None)]);
}

#[tokio::test]
async fn groups_are_created_when_configured() {
    let text = format!(
        "{EXAMPLE_API}\n[rest.groups.create]\nmethod = \"POST\"\nurl = \"/groups\"\nbody = {{ name = \"{{{{ group }}}}\" }}\nok = [201]\nexists = [409]\nid = \"/id\"\n"
    );
    let f = fixture(&text).await;
    Mock::given(method("POST"))
        .and(path("/v2/groups"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 99})))
        .up_to_n_times(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/groups"))
        .respond_with(ResponseTemplate::new(409))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/groups"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"groups": [{"id": 5, "name": "Old"}]})),
        )
        .mount(&f.server)
        .await;
    assert_eq!(
        f.target.create_group("New & Co").await.ok(),
        Some(Some("99".into()))
    );
    assert_eq!(
        f.target.create_group("Old").await.ok(),
        Some(Some("5".into()))
    );
    assert_eq!(
        received(&f).await,
        vec![
            req("POST", "/v2/groups", Some(json!({"name": "New & Co"}))),
            req("POST", "/v2/groups", Some(json!({"name": "Old"}))),
            req("GET", "/v2/groups", None),
        ]
    );
}

#[tokio::test]
async fn members_are_listed_with_lowercased_match_values() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("GET"))
        .and(path("/v2/groups/g%201/members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": [
            {"id": "u1", "email": "JDoe@Example.edu"}, {"id": "u2"}, {"id": 3, "email": "c@x.edu"}
        ]})))
        .mount(&f.server)
        .await;
    assert_eq!(
        f.target.list_members("g 1").await.ok(),
        Some(vec![
            RemoteAccount {
                api_id: "u1".into(),
                match_value: "jdoe@example.edu".into(),
                in_step: false,
            },
            RemoteAccount {
                api_id: "3".into(),
                match_value: "c@x.edu".into(),
                in_step: false,
            },
        ])
    );
    assert_eq!(
        received(&f).await,
        vec![req("GET", "/v2/groups/g%201/members", None)]
    );
}

#[tokio::test]
async fn members_are_added_and_removed() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("POST"))
        .and(path("/v2/groups/g1/members"))
        .respond_with(ResponseTemplate::new(201))
        .up_to_n_times(1)
        .mount(&f.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2/groups/g1/members"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/groups/g1/members/u1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/v2/groups/g1/members/u2"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&f.server)
        .await;
    let t = &f.target;
    let ctx = subject("jdoe@example.edu", &[]);
    assert!(t.add_member(&staff(), "u1", &ctx).await.is_ok());
    let busy = t.add_member(&staff(), "u1", &ctx).await.err();
    assert!(
        matches!(&busy, Some(e) if e.is_transient() && e.status == Some(429)),
        "{busy:?}"
    );
    assert_eq!(
        t.remove_member(&staff(), "u1", &ctx).await.ok(),
        Some(Removal::Removed)
    );
    assert_eq!(
        t.remove_member(&staff(), "u2", &ctx).await.ok(),
        Some(Removal::Absent)
    );
    let members = json!({"members": [{"id": "u1"}]});
    assert_eq!(
        received(&f).await,
        vec![
            req("POST", "/v2/groups/g1/members", Some(members.clone())),
            req("POST", "/v2/groups/g1/members", Some(members)),
            req("DELETE", "/v2/groups/g1/members/u1", None),
            req("DELETE", "/v2/groups/g1/members/u2", None),
        ]
    );
}

#[tokio::test]
async fn responses_that_do_not_fit_are_permanent_errors() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("GET"))
        .and(path("/v2/groups"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&f.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/groups/g1/members"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": {"id": 1}})))
        .mount(&f.server)
        .await;
    let e = f.target.list_groups().await.err();
    assert!(
        matches!(&e, Some(e) if e.class == FailureClass::Permanent && e.message.contains("not JSON")),
        "{e:?}"
    );
    let e = f.target.list_members("g1").await.err();
    assert!(
        matches!(&e, Some(e) if e.class == FailureClass::Permanent && e.message.contains("not an array")),
        "{e:?}"
    );
}

mod in_step;
