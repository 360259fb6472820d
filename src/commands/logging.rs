//! Log output: `tracing` to standard output, text or JSON, with every line
//! capped. Fields that carry outside values are clipped where they are
//! logged (see `crate::bounded`); the cap here is the backstop for anything
//! that slips through, so that no event can write a 200 KB log line.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Longest log line written, in bytes, the newline included.
pub const MAX_LOG_LINE: usize = 8 * 1024;

/// Sets up `tracing` (RUST_LOG overrides the configured level).
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(CappedStdout);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Standard output, one capped line per log event.
struct CappedStdout;

impl<'a> MakeWriter<'a> for CappedStdout {
    type Writer = CappedLines<io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        CappedLines(io::stdout())
    }
}

/// Writes each buffer it is given (the formatter hands over one whole log
/// line per write) cut to [`MAX_LOG_LINE`], with a marker saying so.
pub struct CappedLines<W>(pub W);

impl<W: Write> Write for CappedLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() <= MAX_LOG_LINE {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let marker = format!("… [log line cut: {} bytes]\n", buf.len());
        let mut end = MAX_LOG_LINE - marker.len();
        // Never cut a UTF-8 character in half.
        while end > 0 && (buf[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        self.0.write_all(&buf[..end])?;
        self.0.write_all(marker.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_the_cap_on_a_character_boundary() {
        let cases = [
            ("short line\n".to_string(), "short line\n".len()),
            (format!("{}\n", "é".repeat(20_000)), MAX_LOG_LINE),
            (format!("{}\n", "x".repeat(MAX_LOG_LINE - 1)), MAX_LOG_LINE),
        ];
        for (line, want_at_most) in cases {
            let mut out = CappedLines(Vec::new());
            let mut written = 0;
            while written < line.len() {
                written += out.write(&line.as_bytes()[written..]).unwrap_or(0);
            }
            let text =
                String::from_utf8(out.0).unwrap_or_else(|e| panic!("cut mid-character: {e}"));
            assert!(
                text.len() <= want_at_most,
                "{} > {want_at_most}",
                text.len()
            );
            assert!(text.ends_with('\n'));
            if line.len() > MAX_LOG_LINE {
                assert!(
                    text.contains("[log line cut"),
                    "{}",
                    &text[text.len() - 60..]
                );
            } else {
                assert_eq!(text, line);
            }
        }
    }
}
