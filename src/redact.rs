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
        for (written, shown) in [
            ("https://api.example.com/v2", "https://api.example.com/v2"),
            (
                "https://svc@api.example.com/v2",
                "https://svc@api.example.com/v2",
            ),
            (
                "https://svc:pw@api.example.com",
                "https://svc:***@api.example.com",
            ),
            (
                "https://svc:pw@api.example.com:8443/v2?a=b",
                "https://svc:***@api.example.com:8443/v2?a=b",
            ),
            // The userinfo runs to the last `@` and the password from the first `:`.
            ("https://svc:p@ss:w@rd@host/x", "https://svc:***@host/x"),
            ("https://:pw@host", "https://:***@host"),
            // `@` and `:` after the authority are not userinfo.
            ("https://host/a:b@c", "https://host/a:b@c"),
            ("https://host?u=a:b@c", "https://host?u=a:b@c"),
            // Forms the URL parser accepts for http(s) are masked the same way.
            ("http:svc:pw@host/x", "http:svc:***@host/x"),
            ("https:\\\\svc:pw@host\\x", "https:\\\\svc:***@host\\x"),
            // Unparsable, still masked.
            ("http://svc:pw@[::1/api", "http://svc:***@[::1/api"),
            ("not a url", "not a url"),
            // The broker's and the journal's URLs too.
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            (
                "postgres://j:pw@db/journal?x=1",
                "postgres://j:***@db/journal?x=1",
            ),
            ("", ""),
        ] {
            assert_eq!(redact_url(written), shown, "{written}");
        }
        // The parser agrees on what the password is.
        let u = url::Url::parse("https:\\\\svc:pw@host\\x").unwrap();
        assert_eq!(u.password(), Some("pw"));
    }
}
