//! The operator console: the admin API as web pages, on the same listener
//! with the same credentials and roles (`read` sees, `operate` acts).
//! Pages are rendered on the server (minijinja, every value HTML-escaped)
//! from the same functions as the JSON endpoints; they work without
//! JavaScript, which only refreshes the overview in place.
//!
//! Every change is a POST of a form carrying a CSRF token ([`csrf`]); the
//! pages forbid inline scripts and styles, framing and foreign sources
//! through their Content-Security-Policy.

mod chart;
mod csrf;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::routes::{self, EventView, EventsQuery, RequeueRequest};
use super::{ApiError, Shared};
use crate::config::admin::Role;

/// What the pages may load: their own stylesheet and script, nothing inline,
/// nothing from elsewhere, and no page may frame them.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Rows of the events page.
const EVENTS_PER_PAGE: u32 = 50;
/// Rows of a subject's history.
const SUBJECT_HISTORY: u32 = 200;
/// Dead letters listed per provisioner.
const LETTERS_SHOWN: usize = 100;

const TEMPLATES: [(&str, &str); 8] = [
    ("base.html", include_str!("templates/base.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    ("subject.html", include_str!("templates/subject.html")),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// The console's templates and its CSRF key.
pub struct Console {
    env: Environment<'static>,
    csrf: csrf::CsrfKey,
}

impl Console {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Everything is HTML, whatever the template's name.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_filter("q", |v: String| crate::template::encode_component(&v));
        env.add_filter("utc", crate::worker::status::rfc3339);
        env.add_filter("fixed1", |v: f64| format!("{v:.1}"));
        env.add_filter("clip", clip);
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // A template that does not parse is a bug the tests catch;
                // its pages then answer 500 with the reason.
                tracing::error!(template = name, error = %e, "a console template does not parse");
            }
        }
        Console {
            env,
            csrf: csrf::CsrfKey::random(),
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(overview))
        .route("/console.css", get(stylesheet))
        .route("/console.js", get(script))
        .route("/events", get(events))
        .route("/events/{id}", get(event))
        .route("/subject", get(subject))
        .route("/dead-letters", get(dead_letters))
        .route("/provisioners/{name}/pause", post(pause))
        .route("/provisioners/{name}/resume", post(resume))
        .route("/dead-letters/{name}/requeue", post(requeue))
}

// ------------------------------------------------------------ responses

/// Headers every console answer carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        // Query strings name subjects: they never leave in a Referer.
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn stylesheet() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("console.css"),
        )
            .into_response(),
    )
}

async fn script() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("console.js"),
        )
            .into_response(),
    )
}

/// Who is signed in, as the pages show it.
#[derive(Serialize)]
struct Viewer {
    name: String,
    role: &'static str,
    /// Whether action buttons are shown.
    operate: bool,
    /// The token the forms carry.
    csrf: String,
}

impl Shared {
    fn viewer(&self, caller: &Caller) -> Viewer {
        Viewer {
            name: caller.name.clone(),
            role: caller.role.as_str(),
            operate: caller.role >= Role::Operate,
            csrf: self.console.csrf.token(&caller.name),
        }
    }

    /// A page: `template` with `ctx` and the viewer.
    fn page(&self, code: StatusCode, template: &str, caller: &Caller, ctx: Value) -> Response {
        let ctx = context! { viewer => self.viewer(caller), ..ctx };
        let rendered = self
            .console
            .env
            .get_template(template)
            .and_then(|t| t.render(ctx));
        match rendered {
            Ok(html) => secured(
                (
                    code,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    html,
                )
                    .into_response(),
            ),
            Err(e) => {
                tracing::error!(template, error = %e, "a console page failed to render");
                secured(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        "the console could not render this page; the worker's log says why",
                    )
                        .into_response(),
                )
            }
        }
    }

    /// An error page with the API's message.
    fn error_page(&self, caller: &Caller, error: ApiError) -> Response {
        let code = error.code;
        self.page(
            code,
            "error.html",
            caller,
            context! { title => code.canonical_reason().unwrap_or("Error"), nav => "", message => error.error },
        )
    }

    fn provisioner_names(&self) -> Vec<String> {
        self.state
            .statuses
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }
}

/// At most `chars` characters of `text`, with an ellipsis when cut.
fn clip(text: String, chars: usize) -> String {
    if text.chars().count() <= chars {
        text
    } else {
        let mut cut: String = text.chars().take(chars).collect();
        cut.push('…');
        cut
    }
}

/// A query parameter as a form sends it: an empty field means no filter.
fn given(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A time from the form (`datetime-local` sends `2026-12-01T09:00`, taken as
/// UTC) or RFC 3339 as the API takes it.
fn form_time(value: Option<String>) -> Option<String> {
    given(value).map(|v| match v.len() {
        16 => format!("{v}:00Z"),
        19 => format!("{v}Z"),
        _ => v,
    })
}

// ------------------------------------------------------------- overview

/// One provisioner on the overview.
#[derive(Serialize)]
struct OverviewRow {
    view: routes::ProvisionerView,
    /// Messages waiting in the consumed queues.
    queued: Option<u32>,
    /// Messages in the dead-letter queue.
    dead_letters: Option<u32>,
    chart: chart::Chart,
}

async fn overview(State(s): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    let mut rows = Vec::new();
    for p in &s.state.statuses {
        let view = routes::view(&s, p, false).await;
        // The last queue of a view is the dead-letter queue.
        let (queued, dead_letters) = match view.queues.as_deref() {
            Some([consumed @ .., dead]) => (
                Some(consumed.iter().map(|q| q.messages).sum()),
                Some(dead.messages),
            ),
            _ => (None, None),
        };
        rows.push(OverviewRow {
            view,
            queued,
            dead_letters,
            chart: chart::chart(&p.per_minute()),
        });
    }
    let now = crate::worker::status::rfc3339(crate::worker::status::now_ms());
    s.page(
        StatusCode::OK,
        "overview.html",
        &caller,
        context! { title => "Overview", nav => "overview", rows, now, journal => s.state.journal.is_some() },
    )
}

// --------------------------------------------------------------- events

/// The events page's filters, as its form sends them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventsForm {
    provisioner: Option<String>,
    subject: Option<String>,
    group: Option<String>,
    result: Option<String>,
    from: Option<String>,
    to: Option<String>,
    event_id: Option<String>,
    cursor: Option<String>,
}

impl EventsForm {
    fn cleaned(self) -> EventsForm {
        EventsForm {
            provisioner: given(self.provisioner),
            subject: given(self.subject),
            group: given(self.group),
            result: given(self.result),
            from: given(self.from),
            to: given(self.to),
            event_id: given(self.event_id),
            cursor: given(self.cursor),
        }
    }

    /// The filters by name (the cursor is not a filter).
    fn filters(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("provisioner", &self.provisioner),
            ("subject", &self.subject),
            ("group", &self.group),
            ("result", &self.result),
            ("from", &self.from),
            ("to", &self.to),
            ("event_id", &self.event_id),
        ]
    }

    /// The query string of these filters, for the links to other pages.
    fn query_string(&self) -> String {
        self.filters()
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .map(|v| format!("{k}={}", crate::template::encode_component(v)))
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

const RESULTS: [&str; 5] = [
    "applied",
    "ignored",
    "dead-lettered",
    "returned",
    "coalesced",
];

async fn events(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(form): Query<EventsForm>,
) -> Response {
    let form = form.cleaned();
    let query = EventsQuery {
        provisioner: form.provisioner.clone(),
        subject: form.subject.clone(),
        group: form.group.clone(),
        result: form.result.clone(),
        from: form_time(form.from.clone()),
        to: form_time(form.to.clone()),
        event_id: form.event_id.clone(),
        id: None,
        cursor: form.cursor.clone(),
        limit: Some(EVENTS_PER_PAGE),
    };
    let (code, page, error) = match routes::events_page(&s, query).await {
        Ok(page) => (StatusCode::OK, Some(page), None),
        Err(e) => (e.code, None, Some(e.error)),
    };
    let (rows, next_cursor) = match page {
        Some(p) => (p.events, p.next_cursor),
        None => (Vec::new(), None),
    };
    let filters = form.query_string();
    s.page(
        code,
        "events.html",
        &caller,
        context! {
            title => "Events", nav => "events", rows, next_cursor, error,
            filters, form => Value::from_serialize(&form), paged => form.cursor.is_some(),
            provisioners => s.provisioner_names(), results => RESULTS,
        },
    )
}

/// As the form shows it: every filter, empty when not set.
impl Serialize for EventsForm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let filters = self.filters();
        let mut map = serializer.serialize_map(Some(filters.len()))?;
        for (k, v) in filters {
            map.serialize_entry(k, v.as_deref().unwrap_or(""))?;
        }
        map.end()
    }
}

async fn event(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Response {
    let query = EventsQuery {
        id: Some(id),
        limit: Some(1),
        ..EventsQuery::default()
    };
    let found: Result<EventView, ApiError> =
        routes::events_page(&s, query).await.and_then(|page| {
            page.events.into_iter().next().ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("the journal holds no event {id} (retention may have removed it)"),
                )
            })
        });
    match found {
        Ok(event) => s.page(
            StatusCode::OK,
            "event.html",
            &caller,
            context! { title => format!("Event {id}"), nav => "events", event },
        ),
        Err(e) => s.error_page(&caller, e),
    }
}

// -------------------------------------------------------------- subject

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SubjectForm {
    subject: Option<String>,
    /// The provisioner whose target to read for the remote state and plan.
    provisioner: Option<String>,
    /// The subject's attributes as JSON, for the match value and the plan.
    attributes: Option<String>,
}

/// One provisioner's part of a subject's page.
#[derive(Serialize)]
struct SubjectSection {
    provisioner: String,
    /// Newest first.
    history: Vec<EventView>,
}

async fn subject(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(form): Query<SubjectForm>,
) -> Response {
    let provisioners = s.provisioner_names();
    let Some(subject) = given(form.subject) else {
        return s.page(
            StatusCode::OK,
            "subject.html",
            &caller,
            context! { title => "Subject", nav => "subject", subject => "", sections => Vec::<SubjectSection>::new(), error => None::<String>, truncated => false, provisioners },
        );
    };
    let chosen = given(form.provisioner);
    let attributes = given(form.attributes);
    // The remote state and plan: reads of the target, never a write.
    let (explanation, explain_error) = match &chosen {
        Some(name) => {
            let q = routes::SubjectQuery {
                attributes: attributes.clone(),
                ..routes::SubjectQuery::default()
            };
            match routes::explained(&s, name, subject.clone(), q).await {
                Ok(e) => (Some(e), None),
                Err(e) => (None, Some(e.error)),
            }
        }
        None => (None, None),
    };
    let query = EventsQuery {
        subject: Some(subject.clone()),
        limit: Some(SUBJECT_HISTORY),
        ..EventsQuery::default()
    };
    let (code, sections, error, truncated) = match routes::events_page(&s, query).await {
        Ok(page) => {
            let truncated = page.next_cursor.is_some();
            let mut by_provisioner: BTreeMap<String, Vec<EventView>> = BTreeMap::new();
            for e in page.events {
                by_provisioner
                    .entry(e.provisioner.clone())
                    .or_default()
                    .push(e);
            }
            let sections: Vec<SubjectSection> = by_provisioner
                .into_iter()
                .map(|(provisioner, history)| SubjectSection {
                    provisioner,
                    history,
                })
                .collect();
            (StatusCode::OK, sections, None, truncated)
        }
        Err(e) => (e.code, Vec::new(), Some(e.error), false),
    };
    s.page(
        code,
        "subject.html",
        &caller,
        context! {
            title => format!("Subject {subject}"), nav => "subject", subject, sections, error, truncated,
            provisioners, chosen, attributes, explanation, explain_error,
        },
    )
}

// --------------------------------------------------------- dead letters

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeadLettersForm {
    provisioner: Option<String>,
    /// Set after a requeue: how many went back.
    requeued: Option<usize>,
}

#[derive(Serialize)]
struct LettersSection {
    provisioner: String,
    letters: Vec<crate::amqp::dead_letters::ParkedEvent>,
    error: Option<String>,
}

async fn dead_letters(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(form): Query<DeadLettersForm>,
) -> Response {
    let chosen = given(form.provisioner);
    let mut sections = Vec::new();
    for name in s.provisioner_names() {
        if chosen.as_ref().is_some_and(|c| *c != name) {
            continue;
        }
        let (letters, error) = match routes::parked(&s, name.clone(), LETTERS_SHOWN).await {
            Ok(view) => (view.letters, None),
            Err(e) => (Vec::new(), Some(e.error)),
        };
        sections.push(LettersSection {
            provisioner: name,
            letters,
            error,
        });
    }
    s.page(
        StatusCode::OK,
        "dead_letters.html",
        &caller,
        context! {
            title => "Dead letters", nav => "dead-letters", sections,
            shown => LETTERS_SHOWN, requeued => form.requeued, chosen,
        },
    )
}

// -------------------------------------------------------------- actions

/// A posted form, whatever its content type says: a body that is not a
/// form, or not this one, reads as an empty form, so that it fails the CSRF
/// check (403) rather than being answered 415 or 422.
struct Posted<T>(T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
        Ok(Posted(
            serde_json::from_value(serde_json::Value::Object(fields)).unwrap_or_default(),
        ))
    }
}

/// A form that changes something: its CSRF token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActionForm {
    csrf: String,
}

/// The requeue form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RequeueForm {
    csrf: String,
    /// One letter; all when empty.
    event_id: Option<String>,
    /// The checkbox: past the mass-deprovision guard.
    allow_removals: Option<String>,
    /// Set by the confirmation page.
    confirmed: Option<String>,
}

impl Shared {
    /// A 403 page unless `token` is the caller's.
    fn csrf_refusal(&self, caller: &Caller, token: &str) -> Option<Response> {
        if self.console.csrf.verify(&caller.name, token) {
            None
        } else {
            Some(self.error_page(
                caller,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this form did not come from this console, or the worker restarted since it \
                     was shown: reload the page and try again",
                ),
            ))
        }
    }
}

async fn pause(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Posted(form): Posted<ActionForm>,
) -> Response {
    pause_or_resume(&s, &caller, &name, &form, true)
}

async fn resume(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Posted(form): Posted<ActionForm>,
) -> Response {
    pause_or_resume(&s, &caller, &name, &form, false)
}

/// Pauses or resumes a provisioner, then shows the overview again.
fn pause_or_resume(
    s: &Shared,
    caller: &Caller,
    name: &str,
    form: &ActionForm,
    pause: bool,
) -> Response {
    if let Some(refused) = s.csrf_refusal(caller, &form.csrf) {
        return refused;
    }
    match s.status(name) {
        Ok(p) => {
            if pause {
                p.pause();
                tracing::info!(provisioner = %name, by = %caller.name, "paused from the console");
            } else {
                p.resume();
                tracing::info!(provisioner = %name, by = %caller.name, "resumed from the console");
            }
            Redirect::to("/").into_response()
        }
        Err(e) => s.error_page(caller, e),
    }
}

async fn requeue(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Posted(form): Posted<RequeueForm>,
) -> Response {
    if let Some(refused) = s.csrf_refusal(&caller, &form.csrf) {
        return refused;
    }
    let event_id = given(form.event_id);
    let allow_removals = form.allow_removals.is_some();
    if allow_removals && form.confirmed.as_deref() != Some("yes") {
        // Past the guard only after a second, explicit POST.
        return s.page(
            StatusCode::OK,
            "confirm.html",
            &caller,
            context! { title => "Confirm requeue", nav => "dead-letters", provisioner => name, event_id },
        );
    }
    let request = RequeueRequest {
        event_id,
        limit: None,
        allow_removals,
    };
    match routes::requeue_letters(&s, &name, request).await {
        Ok(done) => {
            tracing::info!(provisioner = %name, by = %caller.name, requeued = done.requeued, allow_removals, "dead letters requeued from the console");
            Redirect::to(&format!(
                "/dead-letters?provisioner={}&requeued={}",
                crate::template::encode_component(&name),
                done.requeued
            ))
            .into_response()
        }
        Err(e) => s.error_page(&caller, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_utc_and_empty_fields_no_filter() {
        assert_eq!(
            form_time(Some("2026-12-01T09:30".into())).as_deref(),
            Some("2026-12-01T09:30:00Z")
        );
        assert_eq!(
            form_time(Some("2026-12-01T09:30:15".into())).as_deref(),
            Some("2026-12-01T09:30:15Z")
        );
        assert_eq!(
            form_time(Some("2026-12-01T09:30:00+01:00".into())).as_deref(),
            Some("2026-12-01T09:30:00+01:00")
        );
        assert_eq!(form_time(Some("  ".into())), None);
        assert_eq!(given(Some(" jdoe ".into())).as_deref(), Some("jdoe"));
    }

    #[test]
    fn the_next_page_keeps_the_filters_encoded() {
        let form = EventsForm {
            subject: Some("<a b>&".into()),
            result: Some("applied".into()),
            cursor: Some("abc".into()),
            ..EventsForm::default()
        };
        assert_eq!(form.query_string(), "subject=%3Ca%20b%3E%26&result=applied");
    }

    #[test]
    fn every_template_parses() {
        let console = Console::new();
        for (name, _) in TEMPLATES {
            assert!(console.env.get_template(name).is_ok(), "{name}");
        }
    }
}
