//! `[rest]`: the API description of `kind = "rest"` (docs/configuration.md).
//! The file form
//! ([`RestFile`]) is validated into [`RestConfig`], with every template
//! compiled once into one [`Templates`] set.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::config::needs::{MissingOperation, Needs};
use crate::config::problems::{spelling, Problems};
use crate::template::{BodyTemplate, Position, TemplateRef, Templates, UrlTemplate};

/// The `[rest]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestFile {
    /// Template of a local subject's match value, over `subject` and `attributes`.
    #[serde(rename = "match", default = "default_match")]
    pub match_template: String,
    /// `[rest.accounts.*]`: the account operations.
    #[serde(default)]
    pub accounts: AccountsFile,
    /// `[rest.groups.*]`: the group operations.
    #[serde(default)]
    pub groups: GroupsFile,
}

fn default_match() -> String {
    "{{ subject | lower }}".into()
}

/// `[rest.accounts]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsFile {
    /// Match value -> API ID: a single account (`id`), or a search answering a
    /// list (`items`, `id`, optionally `match` to pick the right item).
    pub lookup: Option<OperationFile>,
    /// Every remote account (`items`, `id`, `match`, optionally `paging`).
    pub list: Option<OperationFile>,
    /// Creates an account (optionally `id` of the new account, `exists`).
    pub create: Option<OperationFile>,
    /// Updates an account (`api_id` known).
    pub update: Option<OperationFile>,
    /// Removes or disables an account (`absent`: already gone).
    pub deprovision: Option<OperationFile>,
}

/// `[rest.groups]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFile {
    /// Every remote group (`items`, `id`, `name`, optionally `paging`).
    pub list: Option<OperationFile>,
    /// Creates a missing remote group (`group` known; optionally `id`, `exists`).
    pub create: Option<OperationFile>,
    /// A group's members (`items`, `id`, `match`, optionally `paging`).
    pub members: Option<OperationFile>,
    /// Adds an account to a group (`exists`: already a member).
    pub add_member: Option<OperationFile>,
    /// Removes an account from a group (`absent`: not a member any more).
    pub remove_member: Option<OperationFile>,
}

/// One operation: `[rest.accounts.create]` and the like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationFile {
    /// HTTP method (required).
    pub method: Option<HttpMethod>,
    /// Template of the path (and query) relative to `url_prefix`, starting with `/` (required).
    pub url: Option<String>,
    /// Statuses meaning success.
    #[serde(default = "default_ok")]
    pub ok: Vec<u16>,
    /// Statuses meaning "not there": a look-up finds nothing, a removal is already done.
    #[serde(default)]
    pub absent: Vec<u16>,
    /// Statuses meaning "already there": create falls back to look-up + update,
    /// add_member counts as done.
    #[serde(default)]
    pub exists: Vec<u16>,
    /// JSON body: a table or array whose string leaves are templates.
    pub body: Option<toml::Value>,
    /// JSON pointer to the API ID (in the response, or in each item of a list).
    pub id: Option<String>,
    /// JSON pointer to the array of items of a list response (`""`: the response itself).
    pub items: Option<String>,
    /// JSON pointer to an item's match value.
    #[serde(rename = "match")]
    pub match_pointer: Option<String>,
    /// JSON pointer to a group's name (groups.list).
    pub name: Option<String>,
    /// How a list is read page by page; without it the list is one response.
    pub paging: Option<PagingFile>,
    /// `accounts.update` only: body place -> JSON pointer into a listed (or
    /// looked-up) account, for APIs whose listing is shaped unlike the update
    /// body. A place is a JSON pointer into the body, or a top-level field
    /// name (`first_name` is `/first_name`). Only the named places are
    /// compared; without `compare`, every leaf of the body is compared with
    /// the account's value at the same place.
    pub compare: Option<BTreeMap<String, String>>,
}

fn default_ok() -> Vec<u16> {
    vec![200, 201, 202, 204]
}

/// An operation's `method`; the lowercase spelling is accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// Reads (look-ups, listings).
    #[serde(alias = "get")]
    Get,
    /// Creates, or adds a member.
    #[serde(alias = "post")]
    Post,
    /// Replaces a resource.
    #[serde(alias = "put")]
    Put,
    /// Changes part of a resource.
    #[serde(alias = "patch")]
    Patch,
    /// Removes a resource or a member.
    #[serde(alias = "delete")]
    Delete,
}

impl From<HttpMethod> for Method {
    fn from(m: HttpMethod) -> Method {
        match m {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
        }
    }
}

/// `paging = { style = ..., ... }`; which other keys apply depends on `style`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingFile {
    /// How the pages are addressed (required).
    pub style: Option<PagingStyle>,
    /// page_number: the page query parameter (pages count from 1); offset: the
    /// offset query parameter.
    pub param: Option<String>,
    /// page_number: JSON pointer to the number of the last page (e.g. a page count).
    pub last_page: Option<String>,
    /// offset: the page-size query parameter.
    pub size_param: Option<String>,
    /// offset: the page size asked for.
    pub size: Option<u64>,
    /// offset: the offset of the first item (0, or 1 for SCIM's `startIndex`).
    pub start: Option<u64>,
    /// offset: JSON pointer to the total number of items.
    pub total: Option<String>,
    /// next_link: JSON pointer to the URL (absolute, or relative to the
    /// request) of the next page; missing, null or empty on the last page.
    pub next: Option<String>,
}

fn default_page_size() -> u64 {
    100
}

/// `paging.style`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PagingStyle {
    /// `param` = 1, 2, ... until the page at `last_page` or an empty page.
    PageNumber,
    /// `param` = `start`, `start` + `size`, ... until `total` items, or a short or empty page.
    Offset,
    /// Follow the link at `next` until there is none.
    NextLink,
}

impl PagingStyle {
    /// The keys this style takes besides `style`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            PagingStyle::PageNumber => &["param", "last_page"],
            PagingStyle::Offset => &["param", "size_param", "size", "start", "total"],
            PagingStyle::NextLink => &["next"],
        }
    }
}

impl PagingFile {
    /// Every key but `style`, with whether it is set.
    fn given(&self) -> [(&'static str, bool); 7] {
        [
            ("param", self.param.is_some()),
            ("last_page", self.last_page.is_some()),
            ("size_param", self.size_param.is_some()),
            ("size", self.size.is_some()),
            ("start", self.start.is_some()),
            ("total", self.total.is_some()),
            ("next", self.next.is_some()),
        ]
    }
}

// ------------------------------------------------------------ runtime form

/// The validated `[rest]` table.
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub templates: Templates,
    pub match_template: TemplateRef,
    // Boxed: the operations are large and `KindConfig` holds this inline.
    pub accounts: Box<AccountOps>,
    pub groups: Box<GroupOps>,
}

#[derive(Debug, Clone, Default)]
pub struct AccountOps {
    pub lookup: Option<Operation>,
    pub list: Option<Operation>,
    pub create: Option<Operation>,
    pub update: Option<Operation>,
    pub deprovision: Option<Operation>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupOps {
    pub list: Option<Operation>,
    pub create: Option<Operation>,
    pub members: Option<Operation>,
    pub add_member: Option<Operation>,
    pub remove_member: Option<Operation>,
}

/// A validated operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `accounts.create` and the like, for logs and errors.
    pub name: &'static str,
    pub method: Method,
    pub url: UrlTemplate,
    pub ok: Vec<u16>,
    pub absent: Vec<u16>,
    pub exists: Vec<u16>,
    pub body: Option<BodyTemplate>,
    pub id: Option<String>,
    pub items: Option<String>,
    pub match_pointer: Option<String>,
    pub name_pointer: Option<String>,
    pub paging: Option<Paging>,
    /// `accounts.update`: (pointer into the body, pointer into the account)
    /// pairs, the places an update is compared at; `None` compares every leaf
    /// of the body at its own place.
    pub compare: Option<Vec<(String, String)>>,
}

/// How a list is read page by page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// `param` = 1, 2, ... until the page at `last_page` or an empty page.
    PageNumber {
        param: String,
        last_page: Option<String>,
    },
    /// `param` = start, start + n, ... until `total` items, or a short or empty page.
    Offset {
        param: String,
        size_param: Option<String>,
        size: u64,
        start: u64,
        total: Option<String>,
    },
    /// Follow the link at `next` until there is none.
    NextLink { next: String },
}

// ------------------------------------------------------------ validation

/// Which reads and status lists an operation takes.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    /// Template variables the operation's URL and body may use.
    vars: &'static [&'static str],
    /// `items`: required, optional or not allowed.
    items: Need,
    id: Need,
    match_pointer: Need,
    name_pointer: Need,
    paging: bool,
    absent: bool,
    exists: bool,
    /// Takes `compare`.
    compare: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
    No,
}

const SUBJECT_VARS: &[&str] = &["subject", "match", "attributes", "actor"];
const ACCOUNT_VARS: &[&str] = &["subject", "match", "attributes", "actor", "api_id"];
const MEMBER_VARS: &[&str] = &[
    "subject",
    "match",
    "attributes",
    "actor",
    "api_id",
    "group",
    "group_id",
];

const READ_LIST: Shape = Shape {
    name: "",
    vars: &[],
    items: Need::Required,
    id: Need::Required,
    match_pointer: Need::Required,
    name_pointer: Need::No,
    paging: true,
    absent: false,
    exists: false,
    compare: false,
};

const WRITE: Shape = Shape {
    name: "",
    vars: ACCOUNT_VARS,
    items: Need::No,
    id: Need::No,
    match_pointer: Need::No,
    name_pointer: Need::No,
    paging: false,
    absent: false,
    exists: false,
    compare: false,
};

const LOOKUP: Shape = Shape {
    name: "accounts.lookup",
    vars: SUBJECT_VARS,
    items: Need::Optional,
    id: Need::Required,
    match_pointer: Need::Optional,
    absent: true,
    ..WRITE
};
const ACCOUNTS_LIST: Shape = Shape {
    name: "accounts.list",
    ..READ_LIST
};
const CREATE: Shape = Shape {
    name: "accounts.create",
    vars: SUBJECT_VARS,
    id: Need::Optional,
    exists: true,
    ..WRITE
};
const UPDATE: Shape = Shape {
    name: "accounts.update",
    compare: true,
    ..WRITE
};
const DEPROVISION: Shape = Shape {
    name: "accounts.deprovision",
    absent: true,
    ..WRITE
};
const GROUPS_LIST: Shape = Shape {
    name: "groups.list",
    match_pointer: Need::No,
    name_pointer: Need::Required,
    ..READ_LIST
};
const GROUPS_CREATE: Shape = Shape {
    name: "groups.create",
    vars: &["group"],
    id: Need::Optional,
    exists: true,
    ..WRITE
};
const MEMBERS: Shape = Shape {
    name: "groups.members",
    vars: &["group_id"],
    ..READ_LIST
};
const ADD_MEMBER: Shape = Shape {
    name: "groups.add_member",
    vars: MEMBER_VARS,
    exists: true,
    ..WRITE
};
const REMOVE_MEMBER: Shape = Shape {
    name: "groups.remove_member",
    vars: MEMBER_VARS,
    absent: true,
    ..WRITE
};

/// Validates `[rest]`, reporting every problem; `None` when there was any.
pub fn validate(file: RestFile, p: &mut Problems<'_>) -> Option<RestConfig> {
    let start = p.count();
    let mut templates = Templates::new();
    let match_template = match templates.add(
        "rest.match",
        Position::Text,
        &file.match_template,
        &["subject", "attributes"],
    ) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(
                "rest.match",
                format!("bad template: {e}"),
                "write a template over `subject` and `attributes`, e.g. \"{{ attributes.mail[0] | lower }}\"",
            );
            None
        }
    };
    // An operation that is written but invalid must not read as missing.
    let mut invalid = false;
    let mut op = |shape: Shape, f: Option<OperationFile>| {
        let op = validate_operation(shape, f?, &mut templates, p);
        invalid |= op.is_none();
        op
    };
    let accounts = AccountOps {
        lookup: op(LOOKUP, file.accounts.lookup),
        list: op(ACCOUNTS_LIST, file.accounts.list),
        create: op(CREATE, file.accounts.create),
        update: op(UPDATE, file.accounts.update),
        deprovision: op(DEPROVISION, file.accounts.deprovision),
    };
    let groups = GroupOps {
        list: op(GROUPS_LIST, file.groups.list),
        create: op(GROUPS_CREATE, file.groups.create),
        members: op(MEMBERS, file.groups.members),
        add_member: op(ADD_MEMBER, file.groups.add_member),
        remove_member: op(REMOVE_MEMBER, file.groups.remove_member),
    };
    if invalid || p.count() > start {
        return None;
    }
    Some(RestConfig {
        templates,
        match_template: match_template?,
        accounts: Box::new(accounts),
        groups: Box::new(groups),
    })
}

fn validate_operation(
    shape: Shape,
    f: OperationFile,
    templates: &mut Templates,
    p: &mut Problems<'_>,
) -> Option<Operation> {
    let start = p.count();
    let key = format!("rest.{}", shape.name);
    let needed_by = format!("`{}`", shape.name);

    let method = p.required(
        &format!("{key}.method"),
        f.method,
        &needed_by,
        "\"GET\", \"POST\", \"PUT\", \"PATCH\" or \"DELETE\"",
    );
    let url_example = "\"/users/{{ api_id }}\"";
    let url = p
        .required(&format!("{key}.url"), f.url, &needed_by, url_example)
        .and_then(
            |url| match templates.add_url(&format!("{key}.url"), &url, shape.vars) {
                Ok(u) => Some(u),
                Err(e) => {
                    p.add(
                        format!("{key}.url"),
                        format!("bad URL template: {e}"),
                        format!("write a path relative to url_prefix, e.g. {url_example}"),
                    );
                    None
                }
            },
        );

    check_statuses(&key, "ok", &f.ok, p);
    if f.ok.is_empty() {
        p.add(
            format!("{key}.ok"),
            "is empty, so no answer could succeed",
            "list the success statuses, e.g. ok = [200]",
        );
    }
    for (list, values, allowed, meaning) in [
        ("absent", &f.absent, shape.absent, "\"not there\""),
        ("exists", &f.exists, shape.exists, "\"already there\""),
    ] {
        if values.is_empty() {
            continue;
        }
        if !allowed {
            p.add(
                format!("{key}.{list}"),
                format!("`{}` has no {meaning} outcome", shape.name),
                format!("remove `{list}`; statuses not in `ok` are failures"),
            );
        }
        check_statuses(&key, list, values, p);
        if let Some(s) = values.iter().find(|s| f.ok.contains(s)) {
            p.add(
                format!("{key}.{list}"),
                format!("status {s} is also in `ok`"),
                "give each status one meaning",
            );
        }
    }
    if let Some(s) = f.absent.iter().find(|s| f.exists.contains(s)) {
        p.add(
            format!("{key}.exists"),
            format!("status {s} is also in `absent`"),
            "give each status one meaning",
        );
    }

    let body = f.body.as_ref().and_then(|b| match b {
        toml::Value::Table(_) | toml::Value::Array(_) => {
            templates.add_body(&format!("{key}.body"), b, shape.vars, p)
        }
        _ => {
            p.add(
                format!("{key}.body"),
                "must be a table or an array",
                "write e.g. body = { email = \"{{ match }}\" }",
            );
            None
        }
    });

    let id = pointer(&key, "id", f.id, shape.id, &needed_by, p);
    let items = pointer(&key, "items", f.items, shape.items, &needed_by, p);
    let match_pointer = pointer(
        &key,
        "match",
        f.match_pointer,
        shape.match_pointer,
        &needed_by,
        p,
    );
    let name_pointer = pointer(&key, "name", f.name, shape.name_pointer, &needed_by, p);
    if shape.name == LOOKUP.name && match_pointer.is_some() && items.is_none() {
        p.add(
            format!("{key}.match"),
            "only applies to a search that answers a list (`items`)",
            "set `items` to the array of results, or remove `match`",
        );
    }

    let paging = match f.paging {
        Some(_) if !shape.paging => {
            p.add(
                format!("{key}.paging"),
                format!("`{}` reads no list", shape.name),
                "remove `paging`",
            );
            Err(())
        }
        Some(pf) => validate_paging(&format!("{key}.paging"), pf, p)
            .map(Some)
            .ok_or(()),
        None => Ok(None),
    };

    let compare = f
        .compare
        .and_then(|c| validate_compare(&key, shape, c, f.body.as_ref(), p));

    if p.count() > start {
        return None;
    }
    Some(Operation {
        name: shape.name,
        method: method?.into(),
        url: url?,
        ok: f.ok,
        absent: f.absent,
        exists: f.exists,
        body: if f.body.is_some() { Some(body?) } else { None },
        id,
        items,
        match_pointer,
        name_pointer,
        paging: paging.ok()?,
        compare,
    })
}

/// `compare`: each place names a part of the body, each target is a JSON
/// pointer; an empty table would call every account up to date.
fn validate_compare(
    key: &str,
    shape: Shape,
    compare: BTreeMap<String, String>,
    body: Option<&toml::Value>,
    p: &mut Problems<'_>,
) -> Option<Vec<(String, String)>> {
    let key = format!("{key}.compare");
    if !shape.compare {
        p.add(
            key,
            format!("has no meaning for `{}`", shape.name),
            "remove `compare`; only `[rest.accounts.update]` takes it",
        );
        return None;
    }
    let Some(body) = body else {
        p.add(
            key,
            "there is no `body` to compare",
            "remove `compare`, or give the update a `body`",
        );
        return None;
    };
    if compare.is_empty() {
        p.add(
            key,
            "is empty, so every account would count as up to date and no sync would update any",
            "name the body places to compare, e.g. compare = { first_name = \"/name/first\" }, or remove `compare` to compare the whole body",
        );
        return None;
    }
    let start = p.count();
    let mut pairs = Vec::with_capacity(compare.len());
    for (place, target) in compare {
        let pointer = if place.starts_with('/') {
            place.clone()
        } else {
            format!("/{}", place.replace('~', "~0").replace('/', "~1"))
        };
        if !toml_has(body, &pointer) {
            p.add(
                format!("{key}.{place}"),
                format!("`{pointer}` is not a place in the body"),
                "name a field of the body, or a JSON pointer into it such as \"/user_info/first_name\"",
            );
        }
        p.json_pointer(&format!("{key}.{place}"), &target);
        pairs.push((pointer, target));
    }
    (p.count() == start).then_some(pairs)
}

/// Whether a JSON pointer leads somewhere in a body written in TOML.
fn toml_has(value: &toml::Value, pointer: &str) -> bool {
    let Some(rest) = pointer.strip_prefix('/') else {
        return pointer.is_empty();
    };
    let mut at = value;
    for token in rest.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        let next = match at {
            toml::Value::Table(t) => t.get(&token),
            toml::Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    true
}

fn check_statuses(key: &str, list: &str, values: &[u16], p: &mut Problems<'_>) {
    for s in values {
        if !(100..=599).contains(s) {
            p.add(
                format!("{key}.{list}"),
                format!("{s} is not an HTTP status"),
                "use statuses between 100 and 599",
            );
        }
    }
}

/// A JSON pointer key: present when needed, absent when meaningless, well formed.
fn pointer(
    key: &str,
    field: &str,
    value: Option<String>,
    need: Need,
    needed_by: &str,
    p: &mut Problems<'_>,
) -> Option<String> {
    let key = format!("{key}.{field}");
    match (value, need) {
        (None, Need::Required) => p.required(&key, None, needed_by, &format!("\"/{field}\"")),
        (None, _) => None,
        (Some(_), Need::No) => {
            p.add(
                key,
                format!("has no meaning for {needed_by}"),
                format!("remove `{field}`"),
            );
            None
        }
        (Some(v), _) => {
            p.json_pointer(&key, &v);
            Some(v)
        }
    }
}

fn validate_paging(key: &str, f: PagingFile, p: &mut Problems<'_>) -> Option<Paging> {
    let start = p.count();
    let style = p.required(
        &format!("{key}.style"),
        f.style,
        "`paging`",
        "\"page_number\", \"offset\" or \"next_link\"",
    )?;
    let needed_by = format!("style `{}`", spelling(&style));
    p.only_keys(key, &needed_by, &f.given(), style.keys());
    let mut required = |field: &str, value: Option<String>, example: &str| -> String {
        p.required(
            &format!("{key}.{field}"),
            value.filter(|v| !v.is_empty()),
            &needed_by,
            example,
        )
        .unwrap_or_default()
    };
    let paging = match style {
        PagingStyle::PageNumber => Paging::PageNumber {
            param: required("param", f.param, "\"page\""),
            last_page: f.last_page,
        },
        PagingStyle::Offset => Paging::Offset {
            param: required("param", f.param, "\"offset\""),
            size_param: f.size_param,
            size: f.size.unwrap_or_else(default_page_size),
            start: f.start.unwrap_or(0),
            total: f.total,
        },
        PagingStyle::NextLink => Paging::NextLink {
            next: required("next", f.next, "\"/next\""),
        },
    };
    match &paging {
        Paging::PageNumber {
            last_page: Some(ptr),
            ..
        } => p.json_pointer(&format!("{key}.last_page"), ptr),
        Paging::Offset {
            size,
            total,
            size_param,
            ..
        } => {
            p.at_least(&format!("{key}.size"), *size, 1, "100");
            if let Some(ptr) = total {
                p.json_pointer(&format!("{key}.total"), ptr);
            }
            if size_param.as_deref() == Some("") {
                p.add(
                    format!("{key}.size_param"),
                    "is empty",
                    "name the page-size query parameter, e.g. \"count\"",
                );
            }
        }
        Paging::NextLink { next } if !next.is_empty() => {
            p.json_pointer(&format!("{key}.next"), next)
        }
        _ => {}
    }
    (p.count() == start).then_some(paging)
}

impl RestConfig {
    /// The operations `needs` asks for that this description lacks.
    pub fn missing_operations(&self, needs: Needs) -> Vec<MissingOperation> {
        let (a, g) = (&self.accounts, &self.groups);
        let mut wanted: Vec<(&str, bool, &'static str)> = Vec::new();
        if needs.accounts {
            let by = Needs::ACCOUNTS_KEY;
            wanted.extend([
                ("accounts.lookup", a.lookup.is_some(), by),
                ("accounts.create", a.create.is_some(), by),
                ("accounts.update", a.update.is_some(), by),
                ("accounts.deprovision", a.deprovision.is_some(), by),
                ("accounts.list", a.list.is_some(), by),
            ]);
        }
        if needs.groups {
            let by = Needs::GROUPS_KEY;
            if !needs.accounts {
                wanted.push(("accounts.lookup", a.lookup.is_some(), by));
            }
            wanted.extend([
                ("groups.list", g.list.is_some(), by),
                ("groups.members", g.members.is_some(), by),
                ("groups.add_member", g.add_member.is_some(), by),
                ("groups.remove_member", g.remove_member.is_some(), by),
            ]);
        }
        wanted
            .into_iter()
            .filter(|(_, present, _)| !present)
            .map(|(op, _, needed_by)| MissingOperation {
                key: format!("rest.{op}"),
                needed_by,
            })
            .collect()
    }
}
