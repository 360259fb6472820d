//! The request log of the test doubles: every request as received, in
//! arrival order, with the status it was answered.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde_json::Value;

/// One request as a test double received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Arrival number since the double started (not reset by
    /// `clear_requests`).
    pub seq: u64,
    /// Uppercase method, e.g. `POST`.
    pub method: String,
    /// The path exactly as received, still percent-encoded
    /// (`/users/jdoe%40example.edu`).
    pub path: String,
    /// The query string as received (encoded, without `?`), if any.
    pub query: Option<String>,
    /// The body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<Value>,
    /// The body as text, byte for byte (lossy UTF-8); empty when none.
    pub raw_body: String,
    /// Headers, names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// When the request arrived.
    pub at: Instant,
    /// The status answered; `None` while the request is in flight (or hung).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// `"METHOD /path"`, or `"METHOD /path?query"` when there is a query;
    /// path and query as received (percent-encoded).
    pub fn line(&self) -> String {
        match &self.query {
            Some(query) => format!("{} {}?{}", self.method, self.path, query),
            None => format!("{} {}", self.method, self.path),
        }
    }

    /// A header's value; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The path with percent-encoding decoded (lossy UTF-8).
    pub fn decoded_path(&self) -> String {
        percent_encoding::percent_decode_str(&self.path)
            .decode_utf8_lossy()
            .into_owned()
    }
}

/// A query parameter of a recorded request, percent-decoded (`+` as space).
pub fn query_param(request: &RecordedRequest, name: &str) -> Option<String> {
    let query = request.query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The requests received since the start or the last [`RequestLog::clear`].
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Vec<RecordedRequest>,
    next_seq: u64,
}

impl RequestLog {
    /// Appends a request that has just arrived (status still `None`) and
    /// returns its `seq`.
    pub fn record(&mut self, parts: &Parts, body: &Bytes, at: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let json = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice::<Value>(body).ok()
        };
        self.entries.push(RecordedRequest {
            seq,
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            body: json,
            raw_body: String::from_utf8_lossy(body).into_owned(),
            headers: header_map(&parts.headers),
            at,
            status: None,
        });
        seq
    }

    /// Sets the status of request `seq`, if it is still in the log.
    pub fn complete(&mut self, seq: u64, status: u16) {
        if let Some(entry) = self.entries.iter_mut().rev().find(|r| r.seq == seq) {
            entry.status = Some(status);
        }
    }

    pub fn entries(&self) -> &[RecordedRequest] {
        &self.entries
    }

    /// Forgets the entries; `seq` keeps counting.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Names lowercased; repeated headers joined with `", "`.
fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    map
}
