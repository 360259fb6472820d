//! The configuration reference follows the code: every key of every `*File`
//! struct (the serde structs that files are parsed into) is documented.

use crate::support::repo_path;

/// (struct name, key) of every field of every `pub struct *File` in `source`,
/// with `#[serde(rename = "...")]` applied.
fn keys_of(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in source.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            current = (name.ends_with("File") && rest.contains('{')).then_some(name);
            continue;
        }
        if t == "}" {
            current = None;
            continue;
        }
        let Some(strukt) = &current else { continue };
        if let Some(r) = t.split("rename = \"").nth(1) {
            rename = r.split('"').next().map(str::to_string);
            continue;
        }
        if let Some(field) = t.strip_prefix("pub ").and_then(|f| f.split(':').next()) {
            if !field.contains(' ') && !field.contains('(') {
                out.push((
                    strukt.clone(),
                    rename.take().unwrap_or_else(|| field.to_string()),
                ));
            }
        }
    }
    out
}

#[test]
fn every_configuration_key_is_documented() {
    let docs = ["docs/configuration.md", "docs/scim.md", "docs/auth.md"]
        .iter()
        .filter_map(|d| std::fs::read_to_string(repo_path(d)).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let sources = [
        "src/config/mod.rs",
        "src/config/secret.rs",
        "src/http/auth.rs",
        "src/target/rest/config.rs",
        "src/target/scim/config.rs",
    ];
    let mut missing = Vec::new();
    let mut seen = 0;
    for s in sources {
        let text = std::fs::read_to_string(repo_path(s)).unwrap();
        for (strukt, key) in keys_of(&text) {
            seen += 1;
            // Plain keys appear as `key`, tables as [key] / [parent.key], operation
            // tables as `parent.key`, keys of inline tables in examples as `key = `.
            let forms = [
                format!("`{key}`"),
                format!("[{key}]"),
                format!(".{key}]"),
                format!(".{key}`"),
                format!("{key} = "),
            ];
            if !forms.iter().any(|f| docs.contains(f.as_str())) {
                missing.push(format!("{s}: {strukt}.{key}"));
            }
        }
    }
    assert!(
        seen > 60,
        "the key scan found only {seen} keys: is it still reading the structs?"
    );
    assert!(
        missing.is_empty(),
        "undocumented configuration keys:\n{}",
        missing.join("\n")
    );
}
