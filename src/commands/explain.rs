//! `provisioner explain --provisioner NAME SUBJECT`: one subject's recent
//! events, its account and memberships on the target now, and the plan an
//! `add` would execute now (`crate::explain`). Reads the target, never
//! writes to it.

use std::path::Path;
use std::time::Duration;

use super::{load_config, ExitResult, EXIT_CONFIG};
use crate::assembly;
use crate::explain::{
    self, AccountState, Explanation, MembershipState, PlanStatus, Request, MAX_EVENT_LIMIT,
};
use crate::journal::Journal;

/// How long closing the journal may take (it wrote nothing).
const JOURNAL_CLOSE: Duration = Duration::from_secs(5);

/// The command line of `explain`.
#[derive(Debug, Clone)]
pub struct ExplainArgs {
    pub provisioner: String,
    pub subject: String,
    /// JSON text: an object of name → list of strings.
    pub attributes: Option<String>,
    pub group: Option<String>,
    pub limit: u32,
    pub json: bool,
}

pub async fn explain(config_path: &Path, args: &ExplainArgs) -> ExitResult {
    let Some(config) = load_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    let Some(p) = config
        .provisioners
        .iter()
        .find(|p| p.name == args.provisioner)
    else {
        let names: Vec<_> = config
            .provisioners
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        eprintln!(
            "error: no provisioner `{}`; configured: {}",
            crate::bounded::label(&args.provisioner),
            names.join(", ")
        );
        return Ok(EXIT_CONFIG);
    };
    let attributes = match args.attributes.as_deref().map(explain::parse_attributes) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            eprintln!("error: --{e}");
            return Ok(EXIT_CONFIG);
        }
    };
    let explainer = match assembly::explainer(p) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_CONFIG);
        }
    };
    let (journal, journal_error) = match &config.journal {
        None => (None, None),
        Some(j) => match Journal::open(assembly::journal_settings(j)).await {
            Ok(journal) => (Some(journal), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let request = Request {
        subject: args.subject.clone(),
        attributes,
        group: args.group.clone(),
        limit: Some(args.limit.min(MAX_EVENT_LIMIT)),
    };
    let result = explain::explain(&explainer, journal.as_ref(), &request).await;
    if let Some(journal) = journal {
        let _ = journal
            .close(tokio::time::Instant::now() + JOURNAL_CLOSE)
            .await;
    }
    let mut explanation = match result {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_CONFIG);
        }
    };
    if let Some(why) = journal_error {
        explanation.history.journal = true;
        explanation.history.error = Some(why);
    }
    if args.json {
        match serde_json::to_string_pretty(&explanation) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        }
    } else {
        print!("{}", render(&explanation));
    }
    Ok(0)
}

/// An outside value as the terminal shows it: clipped (`bounded::label`),
/// control characters escaped so that it cannot move the cursor, clear the
/// screen or forge a line.
fn shown(value: &str) -> String {
    escape_controls(&crate::bounded::label(value))
}

/// A longer outside text (an outcome's detail), clipped to
/// `bounded::MAX_DETAIL_BYTES` and escaped like [`shown`].
fn shown_detail(value: &str) -> String {
    escape_controls(&crate::bounded::detail(value))
}

fn escape_controls(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The explanation for a terminal.
pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "subject `{}` of provisioner `{}`{}\n",
        shown(&e.subject),
        shown(&e.provisioner),
        if e.attributes_given {
            ""
        } else {
            " (no attributes given: the look-up and the plan have none)"
        }
    ));

    let h = &e.history;
    s.push_str("\nrecent events, newest first");
    if !h.journal {
        s.push_str(": no journal is kept ([journal] in the worker file)\n");
    } else if let Some(why) = &h.error {
        s.push_str(&format!(
            ": the journal cannot be read: {}\n",
            shown_detail(why)
        ));
    } else if h.events.is_empty() {
        s.push_str(": none recorded\n");
    } else {
        s.push_str(&format!(
            " ({}{}):\n",
            h.events.len(),
            if h.more {
                format!(", older ones beyond --limit {}", h.limit)
            } else {
                String::new()
            }
        ));
        for ev in &h.events {
            s.push_str(&format!(
                "  {}  {} {}  {}: {}  [event {}, {} attempt(s), {} call(s)]\n",
                ev.at,
                ev.action
                    .as_deref()
                    .map(shown)
                    .unwrap_or_else(|| "?".into()),
                ev.group.as_deref().map(shown).unwrap_or_else(|| "-".into()),
                ev.result,
                shown_detail(&ev.detail),
                shown(&ev.event_id),
                ev.attempts,
                ev.api_calls
            ));
        }
    }

    let a = &e.account;
    s.push_str("\naccount on the target (one look-up):\n");
    if let Some(m) = &a.match_value {
        s.push_str(&format!(
            "  match value: {}{}\n",
            shown(m),
            if a.unmanaged {
                " (an unmanaged login: never changed)"
            } else {
                ""
            }
        ));
    }
    match a.state {
        AccountState::Present => s.push_str(&format!(
            "  present, ID {}; {}\n",
            a.api_id.as_deref().map(shown).unwrap_or_default(),
            match a.in_step {
                Some(true) => "in step: an update would change nothing",
                _ => "not in step: an update would change it",
            }
        )),
        AccountState::Absent => s.push_str("  absent\n"),
        AccountState::Unknown => s.push_str(&format!(
            "  unknown: {}\n",
            a.error.as_deref().map(shown_detail).unwrap_or_default()
        )),
    }

    s.push_str("\nmemberships in the mapped target groups:");
    if e.memberships.is_empty() {
        s.push_str(" none mapped\n");
    } else {
        s.push('\n');
        for m in &e.memberships {
            let state = match m.state {
                MembershipState::Member => "member".to_string(),
                MembershipState::NotMember => "not a member".to_string(),
                MembershipState::NoGroup => "no such group on the target".to_string(),
                MembershipState::Unknown => format!(
                    "unknown: {}",
                    m.error.as_deref().map(shown_detail).unwrap_or_default()
                ),
            };
            s.push_str(&format!(
                "  {} -> {}: {state}\n",
                shown(&m.group),
                shown(&m.target_group)
            ));
        }
    }

    s.push_str(&ownership_lines(e.ownership.as_ref()));

    let p = &e.plan;
    match (&p.group, p.status) {
        (None, _) | (_, PlanStatus::NotPlanned) => {
            s.push_str(&format!("\nplan: none ({})\n", shown_detail(&p.detail)));
        }
        (Some(group), status) => {
            let verdict = match status {
                PlanStatus::Planned if p.writes.is_empty() => "nothing to write",
                PlanStatus::Planned => "would write",
                PlanStatus::Ignored => "ignored",
                PlanStatus::Failed => "would fail",
                PlanStatus::NotPlanned => "none",
            };
            s.push_str(&format!(
                "\nplan of `{}` to {} now: {verdict}\n",
                p.action,
                shown(group)
            ));
            for w in &p.writes {
                s.push_str(&format!("  {}\n", shown_detail(w)));
            }
            s.push_str(&format!(
                "  engine: {} [{} call(s), the writes among them recorded, not sent]\n",
                shown_detail(&p.detail),
                p.api_calls
            ));
        }
    }
    s
}

/// The ownership part: whether the worker owns the account and each
/// membership, i.e. whether `remove_only_owned` would let it remove them.
fn ownership_lines(ownership: Option<&crate::explain::Ownership>) -> String {
    let Some(o) = ownership else {
        return "\nownership: not recorded (the worker file has no [journal])\n".into();
    };
    let owned = |v: Option<bool>| match v {
        Some(true) => "owned",
        Some(false) => "not owned",
        None => "unknown",
    };
    let mut s = format!(
        "\nownership (remove_only_owned = {}):\n  account: {}\n",
        o.remove_only_owned,
        owned(o.account)
    );
    for m in &o.memberships {
        s.push_str(&format!(
            "  member of {}: {}\n",
            shown(&m.target_group),
            owned(m.owned)
        ));
    }
    if let Some(error) = &o.error {
        s.push_str(&format!("  error: {}\n", shown_detail(error)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_clipped() {
        assert_eq!(shown("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        let long = "x".repeat(10_000);
        assert!(shown(&long).len() < 400, "{}", shown(&long).len());
    }
}
