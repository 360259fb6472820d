//! `provisioner demo`: a newcomer's tour. An embedded copy of the example
//! API (`crate::demo`), sample events published to a throwaway queue on the broker at
//! `AMQP_URL`, the worker applying them, and the target's final state. With
//! no broker it says how to start one and applies the same events in-process.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ExitResult;
use crate::amqp;
use crate::config::{self, Config, ProvisionerConfig};
use crate::demo::api::DemoApi;
use crate::demo::server::Server;
use crate::worker::Verdict;

const EXAMPLE: &str = include_str!("../../provisioners/example.toml");

fn sample_events() -> Vec<String> {
    [
        r#"{"id":"demo-1","action":"add","group":"app:example:users","subject":"jdoe","attributes":{"mail":["jdoe@example.edu"],"givenName":["John"],"sn":["Doe"]}}"#,
        r#"{"id":"demo-2","action":"add","group":"app:example:users","subject":"asmith","attributes":{"mail":["asmith@example.edu"],"givenName":["Ann"],"sn":["Smith"]}}"#,
        r#"{"id":"demo-3","action":"add","group":"app:example:staff","subject":"jdoe","attributes":{"mail":["jdoe@example.edu"]}}"#,
        r#"{"id":"demo-4","action":"update","group":"app:example:users","subject":"asmith","attributes":{"mail":["asmith@example.edu"],"givenName":["Anne"],"sn":["Smith"]}}"#,
        r#"{"id":"demo-5","action":"add","group":"app:example:users","subject":"breakglass","attributes":{"mail":["breakglass@example.edu"]}}"#,
        r#"{"id":"demo-6","action":"membership_sync","group":"app:example:admins","subjects":["asmith"],"attributes":{"asmith":{"mail":["asmith@example.edu"]}}}"#,
        r#"{"id":"demo-7","action":"rename","group":"app:example:users","subject":"jdoe"}"#,
        r#"{"id":"demo-8","action":"add","group":"app:payroll:users","subject":"jdoe"}"#,
        r#"{"id":"demo-9","action":"delete","group":"app:example:users","subject":"olduser","attributes":{"mail":["olduser@example.edu"]}}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The example provisioner, aimed at the demo API and a throwaway queue.
fn demo_provisioner(api_url: &str, queue: &str) -> Result<ProvisionerConfig, String> {
    let mut table: toml::Table = toml::from_str(EXAMPLE).map_err(|e| e.to_string())?;
    table.insert("url_prefix".into(), toml::Value::String(api_url.into()));
    table.insert("queue".into(), toml::Value::String(queue.into()));
    table.insert("name".into(), toml::Value::String("example".into()));
    table.insert("target_group_retry_delay".into(), toml::Value::Integer(1));
    // The tour removes `olduser`, whom the demo directory starts with and the
    // worker never created: it shows removals, so it removes what it is told.
    table.insert("remove_only_owned".into(), toml::Value::Boolean(false));
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    config::parse_provisioner(Path::new("provisioners/example.toml"), &text, &mut errors)
        .ok_or_else(|| config::problems::ConfigErrors(errors).to_string())
}

pub async fn demo() -> ExitResult {
    // lapin reports its own clean shutdown of short-lived connections as errors.
    super::init_logging("error,lapin=off", config::LogFormat::Text);
    let api = DemoApi::new();
    let server = match Server::start(api.router()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the embedded mock target: {e}");
            return Ok(1);
        }
    };
    api.add_group("Staff");
    api.add_group("Admins");
    api.add_user("breakglass@example.edu", "Break", "Glass");
    api.add_user("olduser@example.edu", "Old", "User");
    let _ = api.add_member("Admins", "olduser@example.edu");

    let queue = format!(
        "provisioner.demo.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let provisioner = match demo_provisioner(&server.url(), &queue) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: the example provisioner is invalid: {e}");
            return Ok(1);
        }
    };
    let mut cfg = match config::from_provisioner_files(&[]) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(super::EXIT_CONFIG);
        }
    };
    cfg.provisioners = vec![provisioner];
    cfg.shutdown_grace = Duration::from_secs(5);

    println!("provisioner demo");
    println!("================");
    println!(
        "Target: an embedded mock of the Zoom-style API in provisioners/example.toml, at {}",
        server.url()
    );
    println!("        seeded with groups Staff and Admins, the unmanaged account breakglass@example.edu,");
    println!("        and olduser@example.edu (a member of Admins).\n");

    let events = sample_events();
    let broker = cfg.amqp.url.shown();
    match amqp::connect(&cfg.amqp, "provisioner:demo").await {
        Ok(conn) => {
            let _ = conn.close(200, "probe".into()).await;
            println!("Broker: {broker}; throwaway queue `{queue}`.\n");
            through_broker(cfg, &queue, &events).await;
        }
        Err(e) => {
            println!("No RabbitMQ broker answered: {e}.");
            println!("To run the demo through a broker, start one and run the demo again:");
            println!("    rabbitmq-server -detached        (Debian/Ubuntu: apt-get install rabbitmq-server)");
            println!("or point AMQP_URL at a running broker. Meanwhile, the same events applied in-process:\n");
            in_process(&cfg.provisioners[0], &events).await;
        }
    }

    println!("\nFinal state of the target");
    println!("-------------------------");
    for u in api.users() {
        println!(
            "  user  {:<24} {:<8} {} {}",
            u.email, u.id, u.first_name, u.last_name
        );
    }
    for g in api.groups() {
        println!(
            "  group {:<24} {:<8} members: {}",
            g.name,
            g.id,
            if g.members.is_empty() {
                "-".to_string()
            } else {
                g.members.join(", ")
            }
        );
    }
    println!(
        "\nThe target received {} API calls. Next: README.md (configuration walk-through), docs/.",
        api.requests_served()
    );
    server.shutdown().await;
    Ok(0)
}

fn print_outcome(n: usize, id: &str, what: &str, verdict: &str, detail: &str, calls: u32) {
    println!("  {n:>2}. {verdict:<13} {id:<7} {what:<40} {detail} [{calls} API calls]");
}

async fn through_broker(cfg: Config, queue: &str, events: &[String]) {
    let amqp_cfg = cfg.amqp.clone();
    let worker = match crate::assembly::worker(cfg) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return;
        }
    };
    let mut outcomes = worker.subscribe();
    let lines: Vec<&str> = events.iter().map(String::as_str).collect();
    println!(
        "Publishing {} events (persistent, with publisher confirms):",
        lines.len()
    );
    for l in &lines {
        println!("  {l}");
    }
    if let Err(e) =
        super::publish::publish_lines(&amqp_cfg, &amqp::Topology::plain(queue), &lines).await
    {
        eprintln!("error: publishing failed: {e}");
        return;
    }
    println!("\nThe worker consumes them (different subjects in parallel, each subject in order):");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in 1..=lines.len() {
        match tokio::time::timeout_at(deadline, outcomes.recv()).await {
            Ok(Ok(o)) => {
                let what = format!(
                    "{} {} {}",
                    o.action.as_deref().unwrap_or("(invalid)"),
                    o.group.as_deref().unwrap_or(""),
                    o.subject.as_deref().unwrap_or("")
                );
                print_outcome(
                    n,
                    &o.event_id,
                    &what,
                    o.verdict.as_str(),
                    &o.detail,
                    o.api_calls,
                );
            }
            _ => {
                println!("  (stopped waiting: not every event finished within 60 s)");
                break;
            }
        }
    }
    shutdown.cancel();
    let _ = run.await;
    // The parked event stays inspectable until the queues are deleted.
    if let Ok(conn) = amqp::connect(&amqp_cfg, "provisioner:demo").await {
        if let Ok(ch) = conn.create_channel().await {
            for q in [queue.to_string(), format!("{queue}.dead")] {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
        }
        let _ = conn.close(200, "demo done".into()).await;
    }
    println!("\nThe invalid event went to the dead-letter queue `{queue}.dead` with its reason (deleted with the demo queue).");
}

async fn in_process(p: &ProvisionerConfig, events: &[String]) {
    let engine = match crate::assembly::provisioner(p, crate::assembly::Writes::Apply) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return;
        }
    };
    for (i, line) in events.iter().enumerate() {
        match super::replay::apply_line(engine.as_ref(), &p.retry, line).await {
            super::replay::LineResult::Blank => {}
            super::replay::LineResult::Invalid(invalid) => print_outcome(
                i + 1,
                &invalid.id,
                "(invalid)",
                Verdict::DeadLettered.as_str(),
                &invalid.reason,
                0,
            ),
            super::replay::LineResult::Done(event, attempts) => {
                let what = format!("{} {} {}", event.action, event.group, event.subject_label());
                let (status, detail) = match &attempts.result {
                    Ok(o) => (o.status.as_str(), o.detail.clone()),
                    Err(e) => ("failed", e.to_string()),
                };
                print_outcome(i + 1, &event.id, &what, status, &detail, attempts.api_calls);
            }
        }
    }
}
