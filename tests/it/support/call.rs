//! An HTTP client for the test doubles' own tests: send a request, get the
//! status, the headers and the body as JSON.

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A client that ignores proxy settings (the doubles are on loopback).
pub fn client() -> reqwest::Client {
    match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(e) => panic!("cannot build HTTP client: {e}"),
    }
}

/// An answer: status, headers, body as JSON (`Null` when empty).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// A header's value, when it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req`; panics when it fails or the body is not JSON.
pub async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => panic!("cannot read body: {e}"),
    };
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    };
    Answer {
        status,
        headers,
        body,
    }
}
