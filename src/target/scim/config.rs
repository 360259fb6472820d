//! `[scim]`: overrides of the SCIM defaults for `kind = "scim"`. Every key is
//! optional; see docs/scim.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mapping::{self, AttrPath};
use crate::config::problems::Problems;
use crate::template::{Position, TemplateRef, Templates};

/// The `[scim]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimFile {
    /// Template of the `userName` sent to the provider.
    #[serde(default = "default_user_name")]
    pub user_name: String,
    /// Template of a local subject's match value; by default the rendered
    /// `userName`, lowercased. It sees `subject`, `attributes` and
    /// `user_name` (the rendered userName); no `actor`, as match values are
    /// computed outside of any one event.
    #[serde(rename = "match", default)]
    pub match_template: Option<String>,
    /// SCIM attribute path -> template, merged over the defaults (`emails`,
    /// `name.givenName`, `name.familyName`, `displayName`); `""` drops a default.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// How an account is updated.
    #[serde(default)]
    pub update_method: UpdateMethod,
    /// How an account is deprovisioned.
    #[serde(default)]
    pub deprovision: Deprovision,
    /// Create a mapped group that the provider does not have yet.
    #[serde(default)]
    pub create_missing_groups: bool,
    /// `count` asked for per page when listing users and groups.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// The provider's attribute compared with the match value in look-ups
    /// (`filter=<attr> eq "..."`) and read from listed accounts.
    #[serde(default = "default_filter_attribute")]
    pub filter_attribute: String,
    /// How a group member's match value is found.
    #[serde(default)]
    pub member_match: MemberMatch,
    /// Members added (or removed) per PATCH on a group.
    #[serde(default = "default_member_batch_size")]
    pub member_batch_size: usize,
}

impl Default for ScimFile {
    fn default() -> Self {
        ScimFile {
            user_name: default_user_name(),
            match_template: None,
            attributes: BTreeMap::new(),
            update_method: UpdateMethod::default(),
            deprovision: Deprovision::default(),
            create_missing_groups: false,
            page_size: default_page_size(),
            filter_attribute: default_filter_attribute(),
            member_match: MemberMatch::default(),
            member_batch_size: default_member_batch_size(),
        }
    }
}

fn default_user_name() -> String {
    "{{ subject }}".into()
}
fn default_page_size() -> usize {
    100
}
fn default_filter_attribute() -> String {
    "userName".into()
}
fn default_member_batch_size() -> usize {
    100
}

/// The attribute mapping used unless `[scim.attributes]` overrides a key
/// (docs/scim.md, "Attribute mapping").
pub fn default_attributes() -> BTreeMap<String, String> {
    [
        ("emails", "{{ attributes.mail[0] }}"),
        ("name.givenName", "{{ attributes.givenName[0] }}"),
        ("name.familyName", "{{ attributes.sn[0] }}"),
        ("displayName", "{{ attributes.displayName[0] }}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Upper bound of `page_size` and `member_batch_size`: providers cap pages
/// themselves, and a huge PATCH is more likely refused than fast.
const MAX_BATCH: usize = 1000;

/// `[scim] update_method`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMethod {
    /// PATCH with one `replace` operation per value.
    #[default]
    Patch,
    /// PUT the whole resource.
    Put,
}

/// `[scim] deprovision`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deprovision {
    /// DELETE the user.
    #[default]
    Delete,
    /// PATCH `active = false`; a later add or update re-activates the user.
    Deactivate,
}

/// `[scim] member_match`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberMatch {
    /// List the users once and join the members with them by id.
    #[default]
    Users,
    /// Trust each member's `display` as its match value.
    Display,
}

/// One mapped attribute: where it goes and its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMapping {
    /// The key as written, for error messages.
    pub key: String,
    pub path: AttrPath,
    pub template: TemplateRef,
}

/// The validated `[scim]` settings.
#[derive(Debug, Clone)]
pub struct ScimConfig {
    /// `user_name`, `match` and the attribute templates, compiled.
    pub templates: Templates,
    pub user_name: TemplateRef,
    pub match_template: Option<TemplateRef>,
    /// Only mappings with a non-empty template.
    pub attributes: Vec<AttributeMapping>,
    pub update_method: UpdateMethod,
    pub deprovision: Deprovision,
    pub create_missing_groups: bool,
    /// Like `member_batch_size`, within 1..=1000: validation refuses any
    /// other value, so both serve as divisors and chunk sizes as they are.
    pub page_size: usize,
    pub filter_attribute: String,
    pub member_match: MemberMatch,
    pub member_batch_size: usize,
}

/// Compiles one template. Missing attributes render as nothing (an LDAP
/// entry without `sn` simply has no family name), so that empty values can be
/// left out of the resource.
fn compile(
    templates: &mut Templates,
    key: &str,
    source: &str,
    p: &mut Problems<'_>,
) -> Option<TemplateRef> {
    match templates.compile(key, Position::Text, source) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(
                key,
                format!("bad template: {e}"),
                "fix the template syntax (minijinja, e.g. \"{{ attributes.mail[0] }}\")",
            );
            None
        }
    }
}

/// `scim.attributes."name.givenName"`: quoted, since paths hold dots and colons.
fn attribute_key(path: &str) -> String {
    format!("scim.attributes.\"{path}\"")
}

/// The parsed paths of the mappings with a non-empty template, by key.
fn paths(table: &BTreeMap<String, String>, p: &mut Problems<'_>) -> Vec<(String, AttrPath)> {
    let mut out = Vec::new();
    for (key, template) in table {
        if template.trim().is_empty() {
            continue;
        }
        match AttrPath::parse(key) {
            Ok(path) => out.push((key.clone(), path)),
            Err(e) => p.add(
                attribute_key(key),
                e,
                "use a SCIM attribute path such as \"displayName\", \"name.givenName\", \"emails\", \"phoneNumbers[type eq \\\"mobile\\\"]\" or \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber\"",
            ),
        }
    }
    out
}

/// Validates `[scim]`, reporting every problem with its dotted key.
pub fn validate(file: ScimFile, p: &mut Problems<'_>) -> Option<ScimConfig> {
    let start = p.count();
    let mut templates = Templates::new();
    let user_name = compile(&mut templates, "scim.user_name", &file.user_name, p);
    if file.user_name.trim().is_empty() {
        p.add(
            "scim.user_name",
            "is empty, so no account would have a userName",
            "leave it out (default \"{{ subject }}\") or give a template",
        );
    }
    let match_template = file.match_template.as_deref().and_then(|m| {
        let compiled = compile(&mut templates, "scim.match", m, p);
        if m.trim().is_empty() {
            p.add(
                "scim.match",
                "is empty, so every subject would have the same match value",
                "leave it out (default: the userName, lowercased) or give a template",
            );
        }
        compiled
    });

    let mut table = default_attributes();
    table.extend(file.attributes);
    let compiled: BTreeMap<&str, TemplateRef> = table
        .iter()
        .filter(|(_, source)| !source.trim().is_empty())
        .filter_map(|(key, source)| {
            let template = compile(&mut templates, &attribute_key(key), source, p)?;
            Some((key.as_str(), template))
        })
        .collect();
    let paths = paths(&table, p);
    check_shapes(&paths, p);
    let attributes = paths
        .into_iter()
        .filter_map(|(key, path)| {
            let template = compiled.get(key.as_str())?.clone();
            Some(AttributeMapping {
                key,
                path,
                template,
            })
        })
        .collect();

    for (key, value) in [
        ("scim.page_size", file.page_size),
        ("scim.member_batch_size", file.member_batch_size),
    ] {
        if value == 0 || value > MAX_BATCH {
            p.add(
                key,
                format!("{value} is out of range"),
                format!("use a number from 1 to {MAX_BATCH} (default 100)"),
            );
        }
    }
    if let Err(e) = mapping::check_filter_attribute(&file.filter_attribute) {
        p.add(
            "scim.filter_attribute",
            e,
            "name one attribute, e.g. \"userName\", \"externalId\" or \"emails.value\"",
        );
    }

    if p.count() > start {
        return None;
    }
    Some(ScimConfig {
        templates,
        user_name: user_name?,
        match_template,
        attributes,
        update_method: file.update_method,
        deprovision: file.deprovision,
        create_missing_groups: file.create_missing_groups,
        page_size: file.page_size,
        filter_attribute: file.filter_attribute,
        member_match: file.member_match,
        member_batch_size: file.member_batch_size,
    })
}

/// Two paths that would put different shapes at one place (`name` and
/// `name.givenName`, `emails` twice) are caught now, with a sample value, not
/// at the first event.
fn check_shapes(paths: &[(String, AttrPath)], p: &mut Problems<'_>) {
    let defaults = default_attributes();
    // The defaults' spelling is the reference, so the operator's key is the one named.
    let mut ordered: Vec<&(String, AttrPath)> = paths.iter().collect();
    ordered.sort_by_key(|(key, _)| !defaults.contains_key(key));
    let mut spelled: BTreeMap<String, &str> = BTreeMap::new();
    for (key, path) in ordered {
        let top = match path {
            AttrPath::Core { attr, .. } | AttrPath::MultiValued { attr, .. } => attr.as_str(),
            AttrPath::Extension { urn, .. } => urn.as_str(),
        };
        match spelled.get(&top.to_ascii_lowercase()) {
            Some(other) if *other != top => p.add(
                attribute_key(key),
                format!("`{top}` and `{other}` are the same SCIM attribute spelled differently"),
                "spell the attribute the same way in every key",
            ),
            Some(_) => {}
            None => {
                spelled.insert(top.to_ascii_lowercase(), top);
            }
        }
    }
    let sample: Vec<(&AttrPath, String)> = paths
        .iter()
        .map(|(_, path)| (path, "x".to_string()))
        .collect();
    if let Err(e) = mapping::build_user("x", &sample) {
        p.add(
            "scim.attributes",
            e,
            "map each place once; set a default's key to \"\" to drop it (e.g. emails = \"\")",
        );
    }
}
