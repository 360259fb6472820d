//! The demo API's in-memory directory (users, groups, memberships) and the
//! API operations on it. Pure data: no HTTP, no locking, no `.await`; the
//! handlers in `api.rs` call these under the state lock.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// Largest accepted `page_size` (larger values are clamped, as Zoom does).
pub(crate) const MAX_PAGE_SIZE: usize = 300;
/// `page_size` when the request names none: the maximum, so that a client
/// that does not page (a `[rest.groups.members]` without `paging`) sees
/// everything.
pub(crate) const DEFAULT_PAGE_SIZE: usize = MAX_PAGE_SIZE;

/// Zoom-style error codes used in error bodies.
pub const CODE_VALIDATION: u32 = 300;
pub(crate) const CODE_USER_MISSING: u32 = 1001;
pub(crate) const CODE_USER_EXISTS: u32 = 1005;
pub(crate) const CODE_GROUP_MISSING: u32 = 4130;
pub(crate) const CODE_NOT_MEMBER: u32 = 4132;

/// A user account held by the demo API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoUser {
    /// Opaque API ID, `u-000001`, `u-000002`, ... in creation order.
    pub id: String,
    /// The email as it was created or last changed (case kept; compared
    /// case-insensitively).
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// Always `active` (the demo API has no deactivation).
    pub status: String,
}

impl DemoUser {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "status": self.status,
        })
    }
}

/// A group held by the demo API, with its members' emails (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoGroup {
    /// Opaque API ID, `g-000001`, ... in creation order.
    pub id: String,
    pub name: String,
    /// Members' emails, sorted case-insensitively.
    pub members: Vec<String>,
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    name: String,
    /// Member user IDs.
    members: BTreeSet<String>,
}

/// An error answer: HTTP status and a Zoom-style `{"code", "message"}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(400, CODE_VALIDATION, message)
    }

    pub(crate) fn body(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

/// A successful answer: status and optional JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiOk {
    pub status: u16,
    pub body: Option<Value>,
}

impl ApiOk {
    fn json(status: u16, body: Value) -> Self {
        ApiOk {
            status,
            body: Some(body),
        }
    }

    fn no_content() -> Self {
        ApiOk {
            status: 204,
            body: None,
        }
    }
}

pub(crate) type ApiResult = Result<ApiOk, ApiError>;

/// `page_size` / `page_number` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub size: usize,
    pub number: usize,
}

impl PageQuery {
    /// Reads `page_size` and `page_number` from a raw (still encoded) query
    /// string; other parameters are ignored.
    pub(crate) fn parse(query: Option<&str>) -> Result<PageQuery, ApiError> {
        let mut page = PageQuery {
            size: DEFAULT_PAGE_SIZE,
            number: 1,
        };
        let Some(query) = query else {
            return Ok(page);
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "page_size" => {
                    let size = positive(&value, "page_size")?;
                    page.size = size.min(MAX_PAGE_SIZE);
                }
                "page_number" => page.number = positive(&value, "page_number")?,
                _ => {}
            }
        }
        Ok(page)
    }

    /// The slice of `items` on this page and the paging fields of the answer.
    fn apply<T: Clone>(&self, items: &[T]) -> (Vec<T>, Map<String, Value>) {
        let total = items.len();
        let page_count = total.div_ceil(self.size);
        let start = (self.number - 1).saturating_mul(self.size);
        let page: Vec<T> = items.iter().skip(start).take(self.size).cloned().collect();
        let mut fields = Map::new();
        fields.insert("page_count".into(), json!(page_count));
        fields.insert("page_number".into(), json!(self.number));
        fields.insert("page_size".into(), json!(self.size));
        fields.insert("total_records".into(), json!(total));
        (page, fields)
    }
}

fn positive(value: &str, name: &str) -> Result<usize, ApiError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "Invalid field: {name} must be a positive integer, got `{value}`"
        ))),
    }
}

/// The whole directory.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    users: BTreeMap<String, DemoUser>,
    groups: BTreeMap<String, Group>,
    next_user: u64,
    next_group: u64,
}

fn same_email(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn email_key(user: &DemoUser) -> (String, String) {
    (user.email.to_lowercase(), user.id.clone())
}

impl Directory {
    // ----- seeding and inspection (the Rust API) -----

    /// Creates a user, or renames the existing user with that email; returns its ID.
    pub(crate) fn add_user(&mut self, email: &str, first: &str, last: &str) -> String {
        if let Some(id) = self.user_id_by_email(email) {
            if let Some(user) = self.users.get_mut(&id) {
                user.first_name = first.to_string();
                user.last_name = last.to_string();
            }
            return id;
        }
        self.insert_user(email, first, last)
    }

    /// Creates a group, or returns the ID of the existing group with that name.
    pub(crate) fn add_group(&mut self, name: &str) -> String {
        if let Some(group) = self.groups.values().find(|g| g.name == name) {
            return group.id.clone();
        }
        self.next_group += 1;
        let id = format!("g-{:06}", self.next_group);
        self.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                name: name.to_string(),
                members: BTreeSet::new(),
            },
        );
        id
    }

    /// Adds the user with `email` to the group named `group_name`.
    pub(crate) fn add_member(&mut self, group_name: &str, email: &str) -> bool {
        let Some(user_id) = self.user_id_by_email(email) else {
            return false;
        };
        match self.groups.values_mut().find(|g| g.name == group_name) {
            Some(group) => {
                group.members.insert(user_id);
                true
            }
            None => false,
        }
    }

    pub(crate) fn users(&self) -> Vec<DemoUser> {
        let mut users: Vec<DemoUser> = self.users.values().cloned().collect();
        users.sort_by_key(email_key);
        users
    }

    pub(crate) fn user(&self, email: &str) -> Option<DemoUser> {
        self.users
            .values()
            .find(|u| same_email(&u.email, email))
            .cloned()
    }

    pub(crate) fn groups(&self) -> Vec<DemoGroup> {
        let mut groups: Vec<DemoGroup> = self
            .groups
            .values()
            .map(|g| DemoGroup {
                id: g.id.clone(),
                name: g.name.clone(),
                members: self.member_users(g).into_iter().map(|u| u.email).collect(),
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        groups
    }

    // ----- helpers -----

    fn insert_user(&mut self, email: &str, first: &str, last: &str) -> String {
        self.next_user += 1;
        let id = format!("u-{:06}", self.next_user);
        self.users.insert(
            id.clone(),
            DemoUser {
                id: id.clone(),
                email: email.to_string(),
                first_name: first.to_string(),
                last_name: last.to_string(),
                status: "active".to_string(),
            },
        );
        id
    }

    fn user_id_by_email(&self, email: &str) -> Option<String> {
        self.users
            .values()
            .find(|u| same_email(&u.email, email))
            .map(|u| u.id.clone())
    }

    fn delete_user_by_id(&mut self, id: &str) -> bool {
        if self.users.remove(id).is_none() {
            return false;
        }
        for group in self.groups.values_mut() {
            group.members.remove(id);
        }
        true
    }

    /// A group's members as users, sorted by email.
    fn member_users(&self, group: &Group) -> Vec<DemoUser> {
        let mut users: Vec<DemoUser> = group
            .members
            .iter()
            .filter_map(|id| self.users.get(id).cloned())
            .collect();
        users.sort_by_key(email_key);
        users
    }

    fn group(&self, group_id: &str) -> Result<&Group, ApiError> {
        self.groups
            .get(group_id)
            .ok_or_else(|| group_missing(group_id))
    }

    // ----- API operations (what the HTTP routes do) -----

    /// `GET /users/{email}`.
    pub(crate) fn api_get_user(&self, email: &str) -> ApiResult {
        match self.user(email) {
            Some(user) => Ok(ApiOk::json(200, user.to_json())),
            None => Err(user_missing(email)),
        }
    }

    /// `GET /users?page_size=N&page_number=P`.
    pub(crate) fn api_list_users(&self, page: PageQuery) -> ApiResult {
        let users = self.users();
        let (items, mut body) = page.apply(&users);
        body.insert(
            "users".into(),
            Value::Array(items.iter().map(DemoUser::to_json).collect()),
        );
        Ok(ApiOk::json(200, Value::Object(body)))
    }

    /// `POST /users`.
    pub(crate) fn api_create_user(&mut self, body: &Value) -> ApiResult {
        let body = body
            .as_object()
            .ok_or_else(|| ApiError::invalid("Request body must be a JSON object"))?;
        match body.get("action").and_then(Value::as_str) {
            Some("create" | "autoCreate" | "custCreate" | "ssoCreate") => {}
            Some(other) => return Err(ApiError::invalid(format!("Invalid action: {other}"))),
            None => return Err(ApiError::invalid("Invalid field: action is required")),
        }
        let info = body
            .get("user_info")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::invalid("Invalid field: user_info must be an object"))?;
        let email = match info.get("email") {
            Some(Value::String(e)) if e.contains('@') && !e.trim().is_empty() => e.trim(),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid field: user_info.email is not an email address: {other}"
                )))
            }
            None => {
                return Err(ApiError::invalid(
                    "Invalid field: user_info.email is required",
                ))
            }
        };
        let first = optional_string(info, "first_name", "user_info.")?.unwrap_or_default();
        let last = optional_string(info, "last_name", "user_info.")?.unwrap_or_default();
        if self.user_id_by_email(email).is_some() {
            return Err(ApiError::new(409, CODE_USER_EXISTS, "User already exists"));
        }
        let id = self.insert_user(email, &first, &last);
        Ok(ApiOk::json(
            201,
            json!({"id": id, "email": email, "first_name": first, "last_name": last, "type": 1}),
        ))
    }

    /// `PATCH /users/{id}`.
    pub(crate) fn api_update_user(&mut self, id: &str, body: &Value) -> ApiResult {
        let body = body
            .as_object()
            .ok_or_else(|| ApiError::invalid("Request body must be a JSON object"))?;
        if !self.users.contains_key(id) {
            return Err(user_missing(id));
        }
        let first = optional_string(body, "first_name", "")?;
        let last = optional_string(body, "last_name", "")?;
        let email = optional_string(body, "email", "")?;
        if let Some(email) = &email {
            if !email.contains('@') {
                return Err(ApiError::invalid(format!(
                    "Invalid field: email is not an email address: {email}"
                )));
            }
            if self
                .user_id_by_email(email)
                .is_some_and(|other| other != id)
            {
                return Err(ApiError::new(409, CODE_USER_EXISTS, "User already exists"));
            }
        }
        let user = self.users.get_mut(id).ok_or_else(|| user_missing(id))?;
        if let Some(first) = first {
            user.first_name = first;
        }
        if let Some(last) = last {
            user.last_name = last;
        }
        if let Some(email) = email {
            user.email = email;
        }
        Ok(ApiOk::no_content())
    }

    /// `DELETE /users/{id}`.
    pub(crate) fn api_delete_user(&mut self, id: &str) -> ApiResult {
        if self.delete_user_by_id(id) {
            Ok(ApiOk::no_content())
        } else {
            Err(user_missing(id))
        }
    }

    /// `GET /groups`.
    pub(crate) fn api_list_groups(&self) -> ApiResult {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|g| json!({"id": g.id, "name": g.name, "total_members": g.members.len()}))
            .collect();
        Ok(ApiOk::json(
            200,
            json!({"total_records": groups.len(), "groups": groups}),
        ))
    }

    /// `GET /groups/{group_id}/members?page_size=N&page_number=P`.
    pub(crate) fn api_list_members(&self, group_id: &str, page: PageQuery) -> ApiResult {
        let group = self.group(group_id)?;
        let members = self.member_users(group);
        let (items, mut body) = page.apply(&members);
        body.insert(
            "members".into(),
            Value::Array(
                items
                    .iter()
                    .map(|u| json!({"id": u.id, "email": u.email}))
                    .collect(),
            ),
        );
        Ok(ApiOk::json(200, Value::Object(body)))
    }

    /// `POST /groups/{group_id}/members`: all or nothing; members already
    /// there are accepted silently. `added_at` is supplied by the caller.
    pub(crate) fn api_add_members(
        &mut self,
        group_id: &str,
        body: &Value,
        added_at: &str,
    ) -> ApiResult {
        self.group(group_id)?;
        let list = body
            .get("members")
            .and_then(Value::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| ApiError::invalid("Invalid field: members must be a non-empty array"))?;
        let mut ids = Vec::with_capacity(list.len());
        for member in list {
            let id = if let Some(id) = member.get("id").and_then(Value::as_str) {
                if !self.users.contains_key(id) {
                    return Err(user_missing(id));
                }
                id.to_string()
            } else if let Some(email) = member.get("email").and_then(Value::as_str) {
                self.user_id_by_email(email)
                    .ok_or_else(|| user_missing(email))?
            } else {
                return Err(ApiError::invalid(format!(
                    "Invalid field: each member needs an id or an email, got {member}"
                )));
            };
            ids.push(id);
        }
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| group_missing(group_id))?;
        group.members.extend(ids.iter().cloned());
        Ok(ApiOk::json(
            201,
            json!({"ids": ids.join(","), "added_at": added_at}),
        ))
    }

    /// `DELETE /groups/{group_id}/members/{user_id}`.
    pub(crate) fn api_remove_member(&mut self, group_id: &str, user_id: &str) -> ApiResult {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| group_missing(group_id))?;
        if group.members.remove(user_id) {
            Ok(ApiOk::no_content())
        } else {
            Err(ApiError::new(
                404,
                CODE_NOT_MEMBER,
                format!("User {user_id} is not a member of group {group_id}"),
            ))
        }
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    prefix: &str,
) -> Result<Option<String>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid field: {prefix}{field} must be a string, got {other}"
        ))),
    }
}

fn user_missing(who: &str) -> ApiError {
    ApiError::new(
        404,
        CODE_USER_MISSING,
        format!("User does not exist: {who}"),
    )
}

fn group_missing(group_id: &str) -> ApiError {
    ApiError::new(
        404,
        CODE_GROUP_MISSING,
        format!("Group does not exist: {group_id}"),
    )
}
