//! Bounded renderings of values that come from outside (event ids, subjects,
//! error texts) for the places with a size limit: AMQP headers, which the
//! broker refuses above its frame size, and log lines. A clipped value keeps
//! its beginning and a hash of the whole, so it still identifies the value.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Longest event id or subject written into a header or a log field.
pub const MAX_LABEL_BYTES: usize = 256;

/// Longest error text written into a header or a log field.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// `value` itself when it fits in `max_bytes`; otherwise its first bytes (on a
/// character boundary) followed by `…[N bytes, sha256:XXXXXXXXXXXXXXXX]`, so the
/// result is at most `max_bytes` plus about 45 bytes.
pub fn clip(value: &str, max_bytes: usize) -> Cow<'_, str> {
    if value.len() <= max_bytes {
        return Cow::Borrowed(value);
    }
    let mut end = max_bytes;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let digest = hex::encode(Sha256::digest(value.as_bytes()));
    Cow::Owned(format!(
        "{}…[{} bytes, sha256:{}]",
        &value[..end],
        value.len(),
        &digest[..16]
    ))
}

/// [`clip`] to [`MAX_LABEL_BYTES`]: ids, subjects, group names.
pub fn label(value: &str) -> Cow<'_, str> {
    clip(value, MAX_LABEL_BYTES)
}

/// [`clip`] to [`MAX_DETAIL_BYTES`]: error texts and outcome details.
pub fn detail(value: &str) -> Cow<'_, str> {
    clip(value, MAX_DETAIL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_pass_long_ones_keep_a_prefix_and_a_hash() {
        let cases: &[(&str, usize, &str)] = &[
            ("abc", 3, "abc"),
            ("abcd", 3, "abc…[4 bytes, sha256:88d4266fd4e6338d]"),
            // A multi-byte character is never cut in half.
            ("aé", 2, "a…[3 bytes, sha256:"),
        ];
        for (value, max, want) in cases {
            let got = clip(value, *max);
            assert!(got.starts_with(want), "{value:?} {max}: {got}");
        }
        let long = "x".repeat(200 * 1024);
        let clipped = label(&long);
        assert!(clipped.len() <= MAX_LABEL_BYTES + 50, "{}", clipped.len());
        assert_ne!(
            label(&long),
            label(&format!("{long}y")),
            "the hash tells them apart"
        );
    }
}
