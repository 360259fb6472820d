//! Templates (minijinja syntax): the `rest` kind's URLs, bodies and match
//! value, the `scim` kind's userName, match value and attributes,
//! `on_behalf_of` and `[auth] login_body`. URL templates percent-encode every
//! interpolated value for its position; body templates are rendered leaf by
//! leaf into JSON values.
//!
//! Every template is compiled once, into a [`Templates`] set, and only
//! rendered per call: the kinds' templates and `login_body` when the
//! configuration is validated, `on_behalf_of` when the HTTP client is built
//! (its configuration is checked with [`check_syntax`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value as Json;

use crate::config::problems::Problems;

/// Everything but RFC 3986 "unreserved" (`A-Z a-z 0-9 - . _ ~`) is encoded, so
/// a value can never add a path segment, start a query or fragment, or
/// smuggle a pre-encoded sequence.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a value for a URL path segment or a query value.
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// Where a template's output goes; decides how interpolated values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Plain text (bodies, match values, headers): values as they are.
    Text,
    /// The path of a URL: values percent-encoded, never empty.
    UrlPath,
    /// The query of a URL: values percent-encoded.
    UrlQuery,
}

impl Position {
    // The formatter only sees the template's name, so the position is its
    // first character.
    fn tag(self) -> char {
        match self {
            Position::Text => 't',
            Position::UrlPath => 'p',
            Position::UrlQuery => 'q',
        }
    }

    fn of(name: &str) -> Position {
        match name.chars().next() {
            Some('p') => Position::UrlPath,
            Some('q') => Position::UrlQuery,
            _ => Position::Text,
        }
    }
}

/// A compiled template in a [`Templates`] set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef(String);

/// A URL template, split at its first `?` (outside template tags) so each
/// part encodes values for its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    path: TemplateRef,
    query: Option<TemplateRef>,
    /// As written, for the call log.
    source: Arc<str>,
}

impl UrlTemplate {
    /// The template as written in the configuration.
    pub fn source(&self) -> &Arc<str> {
        &self.source
    }
}

/// A JSON body written as a TOML table or array whose string leaves are
/// templates (a `[rest]` operation's `body`, `[auth] login_body`).
#[derive(Debug, Clone)]
pub enum BodyTemplate {
    /// A number, boolean (or date, as its text): sent as written.
    Literal(Json),
    Text(TemplateRef),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

/// A set of compiled templates sharing one environment. Cheap to clone.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        Templates {
            env: Arc::new(environment()),
        }
    }

    /// Compiles `source` under `key` (the configuration key, used in error
    /// messages). `known` lists the variables the template may use; any other
    /// variable is an error, since it would silently render empty.
    pub fn add(
        &mut self,
        key: &str,
        position: Position,
        source: &str,
        known: &[&str],
    ) -> Result<TemplateRef, String> {
        let compiled = self.compile(key, position, source)?;
        let env = &self.env;
        let template = env.get_template(&compiled.0).map_err(|e| describe(&e))?;
        let globals: BTreeSet<&str> = env.globals().map(|(k, _)| k).collect();
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !known.contains(&v.as_str()) && !globals.contains(v.as_str()))
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(format!(
                "unknown variable{} {} (known here: {known})",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        // Filters, tests and functions are looked up when rendering, so a
        // misspelt one only shows in a trial run.
        let sample: Value = known
            .iter()
            .map(|k| {
                let v = if *k == "attributes" {
                    Value::from(std::collections::BTreeMap::<String, Value>::new())
                } else {
                    Value::from("sample")
                };
                (k.to_string(), v)
            })
            .collect();
        if let Err(e) = template.render(&sample) {
            if matches!(
                e.kind(),
                ErrorKind::UnknownFilter
                    | ErrorKind::UnknownTest
                    | ErrorKind::UnknownFunction
                    | ErrorKind::TemplateNotFound
                    | ErrorKind::TooManyArguments
                    | ErrorKind::MissingArgument
            ) {
                return Err(describe(&e));
            }
        }
        Ok(compiled)
    }

    /// Compiles `source` under `key`, checking its syntax only: an unknown
    /// variable renders empty, as a missing attribute does. For the templates
    /// that have always been accepted that way (the SCIM kind's,
    /// `on_behalf_of`): checking their variables now would refuse files that
    /// work.
    pub fn compile(
        &mut self,
        key: &str,
        position: Position,
        source: &str,
    ) -> Result<TemplateRef, String> {
        let name = format!("{}:{key}", position.tag());
        Arc::make_mut(&mut self.env)
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|e| describe(&e))?;
        Ok(TemplateRef(name))
    }

    /// Compiles a URL template: the path part must start with `/`.
    pub fn add_url(
        &mut self,
        key: &str,
        source: &str,
        known: &[&str],
    ) -> Result<UrlTemplate, String> {
        if !source.starts_with('/') {
            return Err(format!(
                "`{source}` does not start with `/` (it is relative to url_prefix)"
            ));
        }
        let (path, query) = split_url(source);
        let path = self.add(key, Position::UrlPath, path, known)?;
        let query = match query {
            Some(q) => Some(self.add(key, Position::UrlQuery, q, known)?),
            None => None,
        };
        Ok(UrlTemplate {
            path,
            query,
            source: Arc::from(source),
        })
    }

    /// Compiles a body: string leaves become templates over `known`, other
    /// leaves are kept as written. Every bad leaf is reported under its own
    /// key (`key.field[0]`); `None` when there was any.
    pub fn add_body(
        &mut self,
        key: &str,
        value: &toml::Value,
        known: &[&str],
        p: &mut Problems<'_>,
    ) -> Option<BodyTemplate> {
        match value {
            toml::Value::String(s) => match self.add(key, Position::Text, s, known) {
                Ok(t) => Some(BodyTemplate::Text(t)),
                Err(e) => {
                    p.add(key, format!("bad template: {e}"), "fix the template");
                    None
                }
            },
            toml::Value::Array(items) => {
                let compiled: Vec<Option<BodyTemplate>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.add_body(&format!("{key}[{i}]"), item, known, p))
                    .collect();
                compiled
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(BodyTemplate::Array)
            }
            toml::Value::Table(table) => {
                let compiled: Vec<Option<(String, BodyTemplate)>> = table
                    .iter()
                    .map(|(k, v)| {
                        self.add_body(&format!("{key}.{k}"), v, known, p)
                            .map(|b| (k.clone(), b))
                    })
                    .collect();
                compiled
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(BodyTemplate::Object)
            }
            scalar => match toml_to_json(scalar) {
                Ok(json) => Some(BodyTemplate::Literal(json)),
                Err(e) => {
                    p.add(key, e, "use a finite number");
                    None
                }
            },
        }
    }

    /// Renders a body leaf by leaf: a value always lands inside a JSON
    /// string, so no value can change the body's structure.
    pub fn render_body(&self, body: &BodyTemplate, ctx: &Value) -> Result<Json, String> {
        Ok(match body {
            BodyTemplate::Literal(v) => v.clone(),
            BodyTemplate::Text(t) => Json::String(self.render(t, ctx)?),
            BodyTemplate::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|b| self.render_body(b, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            BodyTemplate::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, b)| Ok((k.clone(), self.render_body(b, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }

    /// Renders one template.
    pub fn render(&self, template: &TemplateRef, ctx: &Value) -> Result<String, String> {
        let t = self
            .env
            .get_template(&template.0)
            .map_err(|e| describe(&e))?;
        t.render(ctx).map_err(|e| describe(&e))
    }

    /// Renders a URL template into an encoded path and query. A value that
    /// would make a `.` or `..` segment is refused: URL parsers resolve those
    /// (even percent-encoded), which would send the call elsewhere.
    pub fn render_url(&self, url: &UrlTemplate, ctx: &Value) -> Result<String, String> {
        let path = self.render(&url.path, ctx)?;
        check_dot_segments(&path)?;
        match &url.query {
            Some(q) => Ok(format!("{path}?{}", self.render(q, ctx)?)),
            None => Ok(path),
        }
    }
}

/// A TOML value as the JSON value it stands for; a date becomes its text.
/// Refuses only a float JSON cannot carry (`nan`, `inf`).
pub fn toml_to_json(value: &toml::Value) -> Result<Json, String> {
    Ok(match value {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(x) => match serde_json::Number::from_f64(*x) {
            Some(n) => Json::Number(n),
            None => return Err(format!("{x} cannot be sent as JSON")),
        },
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => {
            Json::Array(items.iter().map(toml_to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => Json::Object(
            table
                .iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Refuses a path with a segment that is `.` or `..`, percent-encoded or not.
pub fn check_dot_segments(path: &str) -> Result<(), String> {
    for segment in path.split('/') {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "the URL path `{path}` would contain the segment `{segment}`, which URL parsers resolve away"
            ));
        }
    }
    Ok(())
}

/// Splits a URL template at its first `?` outside `{{ }}`, `{% %}` and `{# #}`.
pub fn split_url(source: &str) -> (&str, Option<&str>) {
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' && i + 1 < bytes.len() {
            let close = match bytes[i + 1] {
                b'{' => Some("}}"),
                b'%' => Some("%}"),
                b'#' => Some("#}"),
                _ => None,
            };
            if let Some(close) = close {
                match source[i + 2..].find(close) {
                    Some(end) => {
                        i = i + 2 + end + 2;
                        continue;
                    }
                    // An unclosed tag: compiling reports it.
                    None => return (source, None),
                }
            }
        }
        if bytes[i] == b'?' {
            return (&source[..i], Some(&source[i + 1..]));
        }
        i += 1;
    }
    (source, None)
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `attributes.givenName[0]` of a subject without givenName renders "".
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, state, value| {
        // `safe` is deliberately not honoured: every value is encoded.
        let text = if value.is_undefined() || value.is_none() {
            String::new()
        } else {
            value.to_string()
        };
        match Position::of(state.name()) {
            Position::Text => out.write_str(&text).map_err(minijinja::Error::from),
            Position::UrlQuery => out
                .write_str(&encode_component(&text))
                .map_err(minijinja::Error::from),
            Position::UrlPath => {
                if text.is_empty() {
                    // `/users/{{ api_id }}` with no ID would address the collection.
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "a value in the URL path is empty",
                    ));
                }
                out.write_str(&encode_component(&text))
                    .map_err(minijinja::Error::from)
            }
        }
    });
    env
}

/// A template error in one line: what went wrong and where, without the
/// position prefix of the internal name.
fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// Checks that `source` is a valid template.
pub fn check_syntax(source: &str) -> Result<(), String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> Value {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect()
    }

    fn url(source: &str, value: &str) -> Result<String, String> {
        let mut t = Templates::new();
        let u = t.add_url("k", source, &["v"])?;
        t.render_url(&u, &ctx(&[("v", value)]))
    }

    #[test]
    fn path_values_are_encoded_as_one_segment() {
        let cases: &[(&str, &str)] = &[
            ("jdoe", "/u/jdoe"),
            ("a/b?c#d", "/u/a%2Fb%3Fc%23d"),
            ("../admin", "/u/..%2Fadmin"),
            ("%2e%2e", "/u/%252e%252e"),
            ("\" or \"1\"=\"1", "/u/%22%20or%20%221%22%3D%221"),
            ("jdoe@example.edu", "/u/jdoe%40example.edu"),
            ("Zoë", "/u/Zo%C3%AB"),
            ("a b+c&d=e", "/u/a%20b%2Bc%26d%3De"),
            ("a\\b", "/u/a%5Cb"),
            ("~-._", "/u/~-._"),
        ];
        for (value, want) in cases {
            assert_eq!(
                url("/u/{{ v }}", value).as_deref(),
                Ok(*want),
                "value {value:?}"
            );
        }
    }

    #[test]
    fn query_values_are_encoded() {
        let cases: &[(&str, &str)] = &[
            ("x@y", "/u?email=x%40y&n=1"),
            ("a&admin=1", "/u?email=a%26admin%3D1&n=1"),
            ("a#b?c/d", "/u?email=a%23b%3Fc%2Fd&n=1"),
            ("", "/u?email=&n=1"),
            ("\"1\"=\"1", "/u?email=%221%22%3D%221&n=1"),
        ];
        for (value, want) in cases {
            assert_eq!(
                url("/u?email={{ v }}&n=1", value).as_deref(),
                Ok(*want),
                "value {value:?}"
            );
        }
    }

    #[test]
    fn dot_segments_and_empty_path_values_are_refused() {
        for value in [".", "..", ""] {
            assert!(url("/u/{{ v }}", value).is_err(), "value {value:?}");
        }
        // Only a whole segment is dangerous.
        assert_eq!(url("/u/{{ v }}.json", ".").as_deref(), Ok("/u/..json"));
        assert!(url("/u/%2E%2e/{{ v }}", "x").is_err());
    }

    #[test]
    fn long_values_are_encoded_whole() {
        let value = "é/".repeat(5000);
        let rendered = url("/u/{{ v }}", &value).unwrap();
        assert_eq!(rendered.len(), "/u/".len() + 5000 * "%C3%A9%2F".len());
        assert!(!rendered[3..].contains('/'));
    }

    #[test]
    fn split_ignores_question_marks_inside_tags() {
        assert_eq!(split_url("/a?b=1?"), ("/a", Some("b=1?")));
        assert_eq!(
            split_url("/a/{{ x if y else '?' }}?q"),
            ("/a/{{ x if y else '?' }}", Some("q"))
        );
        assert_eq!(split_url("/a{# ? #}"), ("/a{# ? #}", None));
        assert_eq!(split_url("/a"), ("/a", None));
    }

    #[test]
    fn missing_values_chain_to_empty_text() {
        let mut t = Templates::new();
        let r = t
            .add(
                "k",
                Position::Text,
                "[{{ attributes.givenName[0] }}|{{ attributes.mail[0] | lower }}]",
                &["attributes"],
            )
            .unwrap();
        let c: Value = [(
            "attributes",
            Value::from_serialize(std::collections::BTreeMap::<String, Vec<String>>::new()),
        )]
        .into_iter()
        .collect();
        assert_eq!(t.render(&r, &c).as_deref(), Ok("[|]"));
        assert_eq!(t.render(&r, &Value::from(())).as_deref(), Ok("[|]"));
    }

    #[test]
    fn text_values_are_not_escaped() {
        let mut t = Templates::new();
        let r = t.add("k", Position::Text, "{{ v }}", &["v"]).unwrap();
        assert_eq!(
            t.render(&r, &ctx(&[("v", "<a href=\"x\">&</a>")]))
                .as_deref(),
            Ok("<a href=\"x\">&</a>")
        );
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_reported() {
        let mut t = Templates::new();
        let e = t
            .add("k", Position::Text, "{{ apid }}", &["api_id"])
            .unwrap_err();
        assert!(e.contains("`apid`") && e.contains("api_id"), "{e}");
        assert!(t
            .add("k2", Position::Text, "{{ range(3) | join }}", &[])
            .is_ok());
        let e = t.add("k3", Position::Text, "{{ x ", &["x"]).unwrap_err();
        assert!(e.contains("syntax"), "{e}");
        assert!(t.add_url("k4", "users/{{ x }}", &["x"]).is_err());
    }

    #[test]
    fn compile_checks_the_syntax_only() {
        let mut t = Templates::new();
        let r = t
            .compile("k", Position::Text, "{{ actor }}|{{ usr_name }}")
            .unwrap();
        assert_eq!(
            t.render(&r, &ctx(&[("actor", "alice")])).as_deref(),
            Ok("alice|")
        );
        assert!(t.compile("k2", Position::Text, "{{ x ").is_err());
    }

    #[test]
    fn match_is_usable_as_a_variable_name() {
        let mut t = Templates::new();
        let u = t.add_url("k", "/users/{{ match }}", &["match"]).unwrap();
        assert_eq!(
            t.render_url(&u, &ctx(&[("match", "a@b")])).as_deref(),
            Ok("/users/a%40b")
        );
    }
}
