//! The effective configuration as JSON for the admin API (`/v1/config`):
//! what the worker runs with, defaults filled in, every secret redacted
//! (credentials are never written, only how they are given).

use serde_json::{json, Value};

use super::admin::JournalStore;
use super::runtime::{Config, ProvisionerConfig, TlsConfig};

const REDACTED: &str = "<redacted>";

fn tls(t: &Option<TlsConfig>) -> Value {
    match t {
        None => Value::Null,
        Some(t) => json!({
            "ca_file": t.ca_file,
            "client_cert": t.client_cert,
            "client_key": t.client_key.as_ref().map(|_| REDACTED),
        }),
    }
}

fn provisioner(p: &ProvisionerConfig) -> Value {
    json!({
        "name": p.name,
        "file": p.file,
        "kind": p.kind.name(),
        "queue": p.queue,
        "partitions": p.partitions,
        "url_prefix": p.url_prefixes.iter().map(|u| crate::redact::redact_url(u)).collect::<Vec<_>>(),
        "endpoint": p.endpoint,
        "provision_group": p.provision_group,
        "target_group_map": p.target_group_map,
        "unmanaged_logins": p.unmanaged_logins,
        "account_cache_size": p.account_cache_size,
        "account_cache_validity_period_s": p.account_cache_validity_period.as_secs(),
        "account_sync_rate_limit_ms": p.account_sync_rate_limit.as_millis() as u64,
        "member_sync_rate_limit_ms": p.member_sync_rate_limit.as_millis() as u64,
        "provision_strategy": format!("{:?}", p.provision_strategy),
        "group_sync_strategy": format!("{:?}", p.group_sync_strategy),
        "full_sync_updates": format!("{:?}", p.full_sync_updates),
        "target_group_cache_size": p.target_group_cache_size,
        "target_group_retry_delay_s": p.target_group_retry_delay.as_secs(),
        "max_removal_share": p.max_removal_share,
        "removal_guard_min": p.removal_guard_min,
        "max_removals": p.max_removals,
        "remove_only_owned": p.remove_only_owned,
        "auth": { "scheme": p.auth.scheme(), "client_secret": REDACTED },
        "tls": tls(&p.tls),
        "on_behalf_of": p.on_behalf_of.as_ref().map(|o| json!({"header": o.header, "value": o.value})),
        "timeout_s": p.timeout.as_secs(),
        "max_response_bytes": p.max_response_bytes,
        "concurrency": p.concurrency,
        "coalesce": p.coalesce,
        "retry": {
            "max_attempts": p.retry.max_attempts,
            "max_elapsed_s": p.retry.max_elapsed.as_secs(),
            "initial_backoff_ms": p.retry.initial_backoff.as_millis() as u64,
            "max_backoff_s": p.retry.max_backoff.as_secs(),
            "probe_first_s": p.retry.probe_first.as_secs(),
            "probe_max_s": p.retry.probe_max.as_secs(),
        },
        "pacing": {
            "adaptive": p.pacing.adaptive,
            "decrease": p.pacing.decrease,
            "increase": p.pacing.increase,
            "min_rate": p.pacing.min_rate,
        },
    })
}

/// The configuration, secrets redacted.
pub fn redacted(c: &Config) -> Value {
    json!({
        "worker_file": c.worker_file,
        "shutdown_grace_s": c.shutdown_grace.as_secs(),
        "amqp": {
            "url": c.amqp.url.shown(),
            "prefetch": c.amqp.prefetch,
            "reconnect_max_s": c.amqp.reconnect_max.as_secs(),
            "queue_type": format!("{:?}", c.amqp.queue_type),
            "delivery_limit": c.amqp.delivery_limit,
            "ack_timeout_s": c.amqp.ack_timeout.as_secs(),
            "max_event_bytes": c.amqp.max_event_bytes,
            "tls": tls(&c.amqp.tls),
        },
        "log": { "level": c.log.level, "format": format!("{:?}", c.log.format) },
        "admin": c.admin.as_ref().map(|a| json!({
            "listen": a.listen.to_string(),
            "tokens": a.tokens.iter().map(|t| json!({"role": t.role.as_str(), "token": REDACTED})).collect::<Vec<_>>(),
            "users": a.users.iter().map(|u| json!({"name": u.name, "role": u.role.as_str(), "password_hash": REDACTED})).collect::<Vec<_>>(),
            "tls": a.tls.as_ref().map(|t| json!({"cert": t.cert, "key": REDACTED, "client_ca": t.client_ca})),
        })),
        "journal": c.journal.as_ref().map(|j| json!({
            "store": match &j.store {
                JournalStore::Sqlite(path) => json!({"sqlite": path}),
                JournalStore::Postgres(url) => json!({"postgres": crate::redact::redact_url(url.expose())}),
            },
            "max_age_days": j.max_age.as_secs() / 86_400,
            "max_rows": j.max_rows,
            "queue": j.queue,
        })),
        "provisioners": c.provisioners.iter().map(provisioner).collect::<Vec<_>>(),
    })
}
