#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::problems::ConfigError;

// ------------------------------------------------------------------ validate

fn validate(text: &str) -> (AuthConfig, Vec<ConfigError>) {
    from_toml(text)
}

fn error_keys(text: &str) -> Vec<String> {
    let (_, errors) = validate(text);
    errors.iter().map(|e| e.key.clone()).collect()
}

#[test]
fn no_auth_table_is_scheme_none() {
    let mut errors = Vec::new();
    let mut p = Problems::new(Path::new("p.toml"), &mut errors);
    assert_eq!(AuthConfig::validate(None, &mut p).scheme(), "none");
    assert!(errors.is_empty());
}

#[test]
fn every_scheme_validates_with_its_keys() {
    let cases = [
        ("scheme = \"none\"", "none"),
        ("scheme = \"bearer\"\nclient_secret = \"s\"", "bearer"),
        ("scheme = \"header\"\nheader = \"X-Api-Key\"\nclient_secret = \"s\"", "header"),
        ("scheme = \"basic\"\nusername = \"u\"\nclient_secret = \"s\"", "basic"),
        (
            "scheme = \"oauth2\"\ntoken_url = \"https://idp.example.com/token\"\nclient_id = \"c\"\nscope = \"a b\"\nclient_secret = \"s\"",
            "oauth2",
        ),
        (
            "scheme = \"login\"\nlogin_url = \"https://api.example.com/login\"\nusername = \"u\"\nlogin_format = \"form\"\nlogin_body = { user = \"{{ username }}\" }\ntoken_pointer = \"/token\"\ntoken_header = \"X-Auth-Token\"\ntoken_prefix = \"\"\ntoken_ttl_s = 60\nclient_secret = \"s\"",
            "login",
        ),
        (
            "scheme = \"jwt\"\nissuer = \"app\"\nttl_s = 60\nqsh = true\nclaims = { aud = \"x\" }\nclient_secret = \"s\"",
            "jwt",
        ),
    ];
    for (text, scheme) in cases {
        let (config, errors) = validate(text);
        assert!(errors.is_empty(), "{text}: {errors:?}");
        assert_eq!(config.scheme(), scheme, "{text}");
    }
}

#[test]
fn login_and_jwt_defaults_follow_the_spec() {
    let (config, errors) = validate(
        "scheme = \"login\"\nlogin_url = \"https://api.example.com/login\"\nusername = \"svc\"\nclient_secret = \"pw\"",
    );
    assert!(errors.is_empty(), "{errors:?}");
    match config {
        AuthConfig::Login {
            format,
            body,
            templates,
            token_pointer,
            token_header,
            token_prefix,
            token_ttl,
            ..
        } => {
            assert_eq!(format, LoginFormat::Json);
            let ctx = minijinja::context! { username => "u", password => "p" };
            assert_eq!(
                templates.render_body(&body, &ctx),
                Ok(serde_json::json!({"username": "u", "password": "p"}))
            );
            assert_eq!(token_pointer, None);
            assert_eq!(token_header, "Authorization");
            assert_eq!(token_prefix, "Bearer ");
            assert_eq!(token_ttl, Duration::from_secs(3600));
        }
        other => panic!("not login: {other:?}"),
    }
    let (config, errors) = validate("scheme = \"jwt\"\nissuer = \"app\"\nclient_secret = \"k\"");
    assert!(errors.is_empty(), "{errors:?}");
    match config {
        AuthConfig::Jwt {
            ttl, qsh, claims, ..
        } => {
            assert_eq!(ttl, Duration::from_secs(300));
            assert!(!qsh);
            assert!(claims.is_empty());
        }
        other => panic!("not jwt: {other:?}"),
    }
}

#[test]
fn validation_names_the_key_that_is_wrong() {
    assert_eq!(error_keys("scheme = \"kerberos\""), vec!["auth.scheme"]);
    assert_eq!(
        error_keys("scheme = \"bearer\""),
        vec!["auth.client_secret"]
    );
    assert_eq!(
        error_keys("scheme = \"header\"\nclient_secret = \"s\""),
        vec!["auth.header"]
    );
    assert_eq!(
        error_keys("scheme = \"header\"\nheader = \"X Api Key\"\nclient_secret = \"s\""),
        vec!["auth.header"]
    );
    assert_eq!(
        error_keys("scheme = \"basic\"\nclient_secret = \"s\""),
        vec!["auth.username"]
    );
    assert_eq!(
        error_keys("scheme = \"oauth2\"\ntoken_url = \"ftp://idp/token\"\nclient_secret = \"s\""),
        vec!["auth.token_url", "auth.client_id"]
    );
    assert_eq!(
        error_keys("scheme = \"login\"\nlogin_url = \"https://a/login\"\nusername = \"u\"\nlogin_format = \"xml\"\ntoken_pointer = \"token\"\ntoken_header = \"Bad Header\"\nclient_secret = \"s\""),
        vec!["auth.login_format", "auth.token_pointer", "auth.token_header"]
    );
    assert_eq!(
        error_keys("scheme = \"jwt\"\nissuer = \"app\"\nttl_s = 0\nclaims = { iss = \"x\", exp = 1 }\nclient_secret = \"s\""),
        vec!["auth.ttl_s", "auth.claims.iss", "auth.claims.exp"]
    );
    // A key of another scheme is a mistake, not silently ignored.
    assert_eq!(
        error_keys("scheme = \"bearer\"\nusername = \"u\"\ntoken_url = \"https://x\"\nclient_secret = \"s\""),
        vec!["auth.username", "auth.token_url"]
    );
    assert_eq!(
        error_keys("scheme = \"none\"\nqsh = true"),
        vec!["auth.qsh"]
    );
}

#[test]
fn unknown_auth_keys_are_rejected_by_the_parser() {
    assert!(toml::from_str::<AuthFile>("scheme = \"bearer\"\nclient_secert = \"s\"").is_err());
}

#[test]
fn secret_sources_resolve_and_their_errors_hide_the_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt.key"), "file-secret-7Gq\n").unwrap();
    let file = dir.path().join("p.toml");
    let auth: AuthFile = toml::from_str(
        "scheme = \"jwt\"\nissuer = \"app\"\nclient_secret = { file = \"jwt.key\" }",
    )
    .unwrap();
    let mut errors = Vec::new();
    let config = AuthConfig::validate(Some(auth), &mut Problems::new(&file, &mut errors));
    assert!(errors.is_empty(), "{errors:?}");
    match &config {
        AuthConfig::Jwt { key, .. } => assert_eq!(key.expose(), "file-secret-7Gq"),
        other => panic!("not jwt: {other:?}"),
    }
    assert!(!format!("{config:?}").contains("file-secret-7Gq"));

    let (_, errors) = validate(
        "scheme = \"bearer\"\nclient_secret = { env = \"PROVISIONER_AUTH_TEST_NEVER_SET\" }",
    );
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .contains("PROVISIONER_AUTH_TEST_NEVER_SET"),
        "{}",
        errors[0]
    );
}
