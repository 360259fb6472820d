//! Credentials kept out of what is shown: the password in a URL's userinfo
//! (`https://user:password@host/`, `amqp://guest:guest@...`,
//! `postgres://user:password@...`) becomes `***`. A leaf: output, logs and
//! errors everywhere use this one function.

/// The URL with the password of its userinfo replaced by `***`, the rest as
/// written. It reads the text rather than a parsed URL so that a URL that
/// does not parse, and is reported for that, is redacted all the same; it
/// ends the authority and splits the userinfo where the URL parser does for
/// http(s) (backslash, last `@`), so it masks whatever password a client
/// would send.
pub fn redact_url(url: &str) -> String {
    let Some(colon) = url.find(':') else {
        return url.to_string();
    };
    let after_scheme = &url[colon + 1..];
    let authority_start =
        colon + 1 + (after_scheme.len() - after_scheme.trim_start_matches(['/', '\\']).len());
    let rest = &url[authority_start..];
    let authority = &rest[..rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some(password_start) = authority[..at].find(':') else {
        return url.to_string();
    };
    format!(
        "{}***{}",
        &url[..authority_start + password_start + 1],
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn only_the_password_is_masked() {
        let cases = [
            ("https://api.example.com/v2", "https://api.example.com/v2"),
            ("https://u:pw@h/x", "https://u:***@h/x"),
            ("https://u@h/x", "https://u@h/x"),
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            ("postgres://p:a@b@db/j?x=1", "postgres://p:***@db/j?x=1"),
            ("ftp://u:pw@x", "ftp://u:***@x"),
            ("not a url", "not a url"),
            ("https://h/path?u=a:b@c", "https://h/path?u=a:b@c"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
