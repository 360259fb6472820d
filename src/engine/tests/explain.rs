//! `crate::explain` over the simulated target: what the plan records, the
//! memberships it reports, and that explaining only reads.

use super::*;
use crate::explain::{explain, AccountState, Explainer, MembershipState, PlanStatus, Request};
use crate::target::dry_run::{DryRunTarget, WriteLog};

/// An explainer as `assembly::explainer` builds one, over `target`.
fn explainer(config: &ProvisionerConfig, target: &Arc<MemoryTarget>) -> Explainer {
    let writes = WriteLog::default();
    let dry: Arc<dyn TargetApi> = Arc::new(DryRunTarget::new(target.clone(), writes.clone()));
    Explainer {
        config: config.clone(),
        engine: Arc::new(Engine::new(config, dry.clone())),
        target: dry,
        writes,
    }
}

fn request(subject: &str) -> Request {
    let attributes: Attributes = serde_json::from_value(attrs_of(subject)).unwrap_or_default();
    Request {
        subject: subject.into(),
        attributes: Some(attributes),
        ..Request::default()
    }
}

#[tokio::test]
async fn create_first_plans_say_what_the_target_would_answer_and_nothing_is_written() {
    let t = MemoryTarget::new()
        .with_accounts(["jdoe"])
        .with_group("Staff", ["jdoe"])
        .arc();
    let c = config(&format!(
        "provision_group = \"{PG}\"\nprovision_strategy = \"create-first\"\ntarget_group_map = {{ \"{STAFF}\" = \"Staff\", \"app:example:admins\" = \"Admins\" }}"
    ));
    let before = t.snapshot();
    let e = explain(&explainer(&c, &t), None, &request("jdoe"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.account.state, AccountState::Present);
    assert_eq!(e.account.api_id.as_deref(), Some("u-jdoe"));
    let states: Vec<_> = e
        .memberships
        .iter()
        .map(|m| (m.target_group.as_str(), m.state))
        .collect();
    assert_eq!(
        states,
        [
            ("Admins", MembershipState::NoGroup),
            ("Staff", MembershipState::Member)
        ]
    );
    assert_eq!(e.plan.status, PlanStatus::Planned);
    assert_eq!(e.plan.writes, ["would create account `jdoe`"]);
    assert!(e.plan.detail.contains("create-first"), "{}", e.plan.detail);
    assert!(!e.history.journal);
    assert_eq!(e.ownership, None);
    // Reads only reached the target.
    assert_eq!(
        t.take_calls(),
        ["lookup jdoe", "list_groups", "list_members g-staff"]
    );
    assert_eq!(t.snapshot(), before);
}

#[tokio::test]
async fn without_a_provision_group_or_a_named_group_nothing_is_planned() {
    let t = MemoryTarget::new().with_accounts(["jdoe"]).arc();
    let c = config(&format!("target_group_map = {{ \"{STAFF}\" = \"Staff\" }}"));
    let x = explainer(&c, &t);
    let e = explain(&x, None, &request("jdoe"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.plan.status, PlanStatus::NotPlanned);
    assert_eq!(e.memberships[0].state, MembershipState::NoGroup);
    let named = Request {
        group: Some(STAFF.to_uppercase()),
        ..request("jdoe")
    };
    let e = explain(&x, None, &named)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.plan.group.as_deref(), Some(STAFF));
    assert_eq!(e.plan.status, PlanStatus::Failed, "{:?}", e.plan);
    assert!(e.plan.detail.contains("Staff"), "{}", e.plan.detail);
    let blank = Request {
        subject: "  ".into(),
        ..Request::default()
    };
    assert!(explain(&x, None, &blank).await.is_err());
}
