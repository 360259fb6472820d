//! Validation: the file structs of `file.rs` become the runtime types of
//! `runtime.rs`. Every check reports through [`Problems`] and goes on, so a
//! file's problems are all found in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::AuthConfig;
use super::file::{
    AmqpFile, GroupMapSource, Kind, OnBehalfOfFile, PacingFile, ProvisionerFile, RetryFile,
    StringOrList, TlsFile,
};
use super::problems::{ConfigError, Problems};
use super::runtime::{
    split_list, AmqpConfig, BrokerUrls, KindConfig, OnBehalfOf, PacingPolicy, ProvisionerConfig,
    RetryPolicy, TlsConfig,
};
use super::secret::Secret;
use crate::redact::redact_url;
use crate::target::rest::config::RestFile;
use crate::target::scim::config::ScimFile;

// ---------------------------------------------------------------- worker file

/// `[amqp]`, against the URL the worker will use (`AMQP_URL` wins).
pub(super) fn amqp(file: AmqpFile, p: &mut Problems<'_>) -> AmqpConfig {
    let env_url = std::env::var("AMQP_URL").ok().filter(|u| !u.is_empty());
    amqp_config(file, env_url, p)
}

/// `[amqp]` validated against the URL the worker will really use: `env_url`
/// (`AMQP_URL`) when set, else the file's. Taken as an argument so that tests
/// need not change the process environment, which other tests read.
pub(super) fn amqp_config(
    file: AmqpFile,
    env_url: Option<String>,
    p: &mut Problems<'_>,
) -> AmqpConfig {
    let (url_source, written): (&str, Vec<String>) = match env_url {
        Some(list) => ("AMQP_URL", owned(split_list(&list))),
        None => match file.url {
            StringOrList::One(list) => ("amqp.url", owned(split_list(&list))),
            StringOrList::Many(urls) => ("amqp.url", urls),
        },
    };
    let scheme = broker_urls(url_source, &written, p);
    p.at_least("amqp.prefetch", file.prefetch, 1, "64");
    p.at_least("amqp.reconnect_max_s", file.reconnect_max_s, 1, "30");
    p.at_least("amqp.max_event_bytes", file.max_event_bytes, 1, "33554432");
    p.at_least("amqp.delivery_limit", file.delivery_limit, 1, "20");
    if file.ack_timeout_s < 10 {
        p.add(
            "amqp.ack_timeout_s",
            format!("{} s is too short to apply any event", file.ack_timeout_s),
            "set it to the broker's consumer_timeout in seconds (default 1800)",
        );
    }
    let base = p.base_dir();
    let tls = file.tls.map(|t| tls(t, "amqp.tls", &base, p));
    // An operator who wrote the table expects TLS; connecting in the clear
    // while it sits there unused would hide that the broker link is not encrypted.
    if tls.is_some() && scheme == Some("amqp") {
        p.add(
            "amqp.tls",
            format!("the broker URL ({url_source}) is amqp://, which never uses TLS, so this table would be ignored"),
            format!("make {url_source} an amqps:// URL, or remove the [amqp.tls] table"),
        );
    }
    AmqpConfig {
        url: BrokerUrls::new(written.into_iter().map(Secret::new).collect()),
        prefetch: file.prefetch,
        reconnect_max: Duration::from_secs(file.reconnect_max_s),
        queue_type: file.queue_type,
        delivery_limit: file.delivery_limit,
        ack_timeout: Duration::from_secs(file.ack_timeout_s),
        max_event_bytes: file.max_event_bytes,
        tls,
    }
}

fn owned(list: Vec<&str>) -> Vec<String> {
    list.into_iter().map(str::to_string).collect()
}

/// Checks the broker URLs (`key` is where they come from: `amqp.url` or
/// `AMQP_URL`): at least one; each an `amqp://` or `amqps://` URL with a
/// host; one scheme for all, since `[amqp.tls]` applies to every node.
/// Returns that scheme. Problems name the entry and show it without its
/// password.
fn broker_urls(key: &str, urls: &[String], p: &mut Problems<'_>) -> Option<&'static str> {
    let example = "amqp://guest:guest@127.0.0.1:5672/%2f";
    if urls.is_empty() {
        p.add(
            key,
            "no broker URL is given",
            format!("write e.g. {example}; for a cluster, one URL per node, comma-separated"),
        );
        return None;
    }
    let entry = |i: usize| {
        if urls.len() == 1 {
            format!("the URL `{}`", redact_url(&urls[i]))
        } else {
            format!(
                "entry {} of {} (`{}`)",
                i + 1,
                urls.len(),
                redact_url(&urls[i])
            )
        }
    };
    let mut schemes: Vec<(usize, &'static str)> = Vec::new();
    for (i, written) in urls.iter().enumerate() {
        match url::Url::parse(written) {
            Err(e) => p.add(
                key,
                format!("{} is not a URL: {e}", entry(i)),
                format!("write e.g. {example} (a comma in a password is written %2C)"),
            ),
            Ok(u) => {
                let scheme = match u.scheme() {
                    "amqp" => "amqp",
                    "amqps" => "amqps",
                    _ => {
                        p.add(
                            key,
                            format!("{} must start with amqp:// or amqps://", entry(i)),
                            format!("write e.g. {example}"),
                        );
                        continue;
                    }
                };
                if u.host_str().is_none_or(str::is_empty) {
                    p.add(
                        key,
                        format!("{} names no host", entry(i)),
                        format!("write e.g. {example}"),
                    );
                }
                schemes.push((i, scheme));
            }
        }
    }
    let first = schemes.first().map(|(_, s)| *s)?;
    for (i, scheme) in &schemes {
        if *scheme != first {
            p.add(
                key,
                format!(
                    "{} is {scheme}:// while {} is {first}://",
                    entry(*i),
                    entry(schemes[0].0)
                ),
                "use one scheme for every node of the cluster: [amqp.tls] applies to all of them",
            );
        }
    }
    Some(first)
}

/// A retry budget must end before the worker's hold limit: an event that
/// keeps failing while others are served is parked by its budget, not
/// returned to the broker again and again.
pub(super) fn retry_budgets(
    amqp: &AmqpConfig,
    provisioners: &[ProvisionerConfig],
    errors: &mut Vec<ConfigError>,
) {
    let limit = amqp.hold_limit();
    for prov in provisioners {
        if prov.retry.max_elapsed >= limit {
            errors.push(ConfigError {
                file: prov.file.clone(),
                key: "retry.max_elapsed_s".into(),
                problem: format!(
                    "{} s does not end before the worker returns a held delivery ({} s: 90 % of [amqp] ack_timeout_s = {} s)",
                    prov.retry.max_elapsed.as_secs(),
                    limit.as_secs(),
                    amqp.ack_timeout.as_secs()
                ),
                fix: format!("keep it below {} s", limit.as_secs()),
            });
        }
    }
}

/// `remove_only_owned` reads and writes the ownership records, which live
/// in the journal's store: the worker file must have a `[journal]`.
pub(super) fn ownership_store(
    worker_file: &Path,
    has_journal: bool,
    provisioners: &[ProvisionerConfig],
    errors: &mut Vec<ConfigError>,
) {
    if has_journal {
        return;
    }
    for prov in provisioners.iter().filter(|p| p.remove_only_owned) {
        errors.push(ConfigError {
            file: prov.file.clone(),
            key: "remove_only_owned".into(),
            problem: format!(
                "is true, but the worker file `{}` has no `[journal]`: the records of what the worker owns are kept in the journal's store",
                worker_file.display()
            ),
            fix: format!(
                "add a `[journal]` table to `{}` (e.g. `path = \"journal.sqlite\"`, or `url = \"postgres://...\"` shared by several workers), or set remove_only_owned = false",
                worker_file.display()
            ),
        });
    }
}

fn tls(t: TlsFile, key: &str, base: &Path, p: &mut Problems<'_>) -> TlsConfig {
    let mut pem = |name: &str, v: Option<String>| -> Option<PathBuf> {
        let path = base.join(v?);
        if !path.is_file() {
            p.add(
                format!("{key}.{name}"),
                format!("file `{}` does not exist", path.display()),
                "point it at a PEM file (relative paths are relative to this file)",
            );
        }
        Some(path)
    };
    let tls = TlsConfig {
        ca_file: pem("ca_file", t.ca_file),
        client_cert: pem("client_cert", t.client_cert),
        client_key: pem("client_key", t.client_key),
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        p.add(
            key,
            "`client_cert` and `client_key` must be given together",
            "set both or neither",
        );
    }
    tls
}

// ----------------------------------------------------------- provisioner file

/// Validates one provisioner file; `None` when what is wrong leaves nothing
/// to build (no kind, say). Any problem reported makes the file invalid.
pub(super) fn provisioner(f: ProvisionerFile, p: &mut Problems<'_>) -> Option<ProvisionerConfig> {
    let (name, queue) = name_and_queue(f.name, f.queue, p);
    let url_prefixes = url_prefixes(f.url_prefix, p);
    if let Some(ep) = &f.endpoint {
        endpoint(ep, p);
    }
    let (provision_group, target_group_map) = routing(f.provision_group, f.target_group_map, p);
    let unmanaged_logins = match f.unmanaged_logins {
        None => Vec::new(),
        Some(StringOrList::One(s)) => s.split_whitespace().map(str::to_lowercase).collect(),
        Some(StringOrList::Many(v)) => v.iter().map(|s| s.trim().to_lowercase()).collect(),
    };
    p.at_least("account_cache_size", f.account_cache_size, 1, "1000");
    p.at_least(
        "target_group_cache_size",
        f.target_group_cache_size,
        1,
        "100",
    );
    if !(f.max_removal_share > 0.0 && f.max_removal_share <= 1.0) {
        p.add(
            "max_removal_share",
            format!(
                "{} is not a share between 0 (excluded) and 1",
                f.max_removal_share
            ),
            "set e.g. max_removal_share = 0.5, or 1 to turn the guard off",
        );
    }
    p.at_least("timeout_s", f.timeout_s, 1, "30");
    p.at_least("concurrency", f.concurrency, 1, "8");
    let retry = retry(f.retry, p);
    let pacing = pacing(f.pacing, p);
    let auth = AuthConfig::validate(f.auth, p);
    let base = p.base_dir();
    let tls = f.tls.map(|t| tls(t, "tls", &base, p));
    let on_behalf_of = f.on_behalf_of.and_then(|o| on_behalf_of(o, p));
    let kind = kind(f.kind, f.rest, f.scim, p);

    let config = ProvisionerConfig {
        file: p.file().to_path_buf(),
        name,
        queue,
        url_prefixes,
        endpoint: f.endpoint,
        provision_group,
        target_group_map,
        unmanaged_logins,
        account_cache_size: f.account_cache_size,
        account_cache_validity_period: Duration::from_secs(f.account_cache_validity_period),
        account_sync_rate_limit: Duration::from_millis(f.account_sync_rate_limit_ms),
        member_sync_rate_limit: Duration::from_millis(f.member_sync_rate_limit_ms),
        provision_strategy: f.provision_strategy,
        group_sync_strategy: f.group_sync_strategy,
        full_sync_updates: f.full_sync_updates,
        target_group_cache_size: f.target_group_cache_size,
        target_group_retry_delay: Duration::from_secs(f.target_group_retry_delay),
        max_removal_share: f.max_removal_share,
        removal_guard_min: f.removal_guard_min,
        max_removals: f.max_removals,
        remove_only_owned: f.remove_only_owned,
        auth,
        tls,
        on_behalf_of,
        timeout: Duration::from_secs(f.timeout_s),
        max_response_bytes: f.max_response_bytes,
        concurrency: f.concurrency,
        coalesce: f.coalesce,
        partitions: f.partitions,
        retry,
        pacing,
        kind: kind?,
    };
    for missing in config.kind.missing_operations(config.needs()) {
        let table = format!("[{}]", missing.key);
        p.add(
            missing.key,
            format!(
                "`{}` is set, so the `{table}` operation is needed",
                missing.needed_by
            ),
            format!(
                "add `{table}` with its method, url and statuses (see provisioners/example.toml)"
            ),
        );
    }
    Some(config)
}

fn name_and_queue(
    name: Option<String>,
    queue: Option<String>,
    p: &mut Problems<'_>,
) -> (String, String) {
    let name = name.unwrap_or_else(|| {
        p.file()
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    });
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(valid) {
        p.add(
            "name",
            format!("`{name}` is not a valid name"),
            "use letters, digits, `-`, `_` and `.` only",
        );
    }
    let queue = queue.unwrap_or_else(|| format!("provisioner.{name}"));
    (name, queue)
}

/// The nodes' URL prefixes, without trailing `/`.
fn url_prefixes(value: Option<StringOrList>, p: &mut Problems<'_>) -> Vec<String> {
    let example = "\"https://api.example.com/v2\"";
    let prefixes = match p.required("url_prefix", value, "every provisioner", example) {
        None => return Vec::new(),
        Some(StringOrList::One(u)) => vec![u],
        Some(StringOrList::Many(v)) => v,
    };
    if prefixes.is_empty() {
        p.add(
            "url_prefix",
            "is empty",
            format!("give the API's base URL, e.g. {example}"),
        );
    }
    for (i, u) in prefixes.iter().enumerate() {
        let key = if prefixes.len() > 1 {
            format!("url_prefix[{i}]")
        } else {
            "url_prefix".into()
        };
        p.http_url(&key, u, "https://api.example.com/v2");
    }
    prefixes
        .into_iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

fn endpoint(ep: &str, p: &mut Problems<'_>) {
    let ok = ep
        .rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        p.add(
            "endpoint",
            format!("`{ep}` is not host:port"),
            "write e.g. \"10.0.0.5:8443\"",
        );
    }
}

/// `provision_group` and `target_group_map`, lowercased for matching.
fn routing(
    provision_group: Option<String>,
    target_group_map: Option<GroupMapSource>,
    p: &mut Problems<'_>,
) -> (Option<String>, BTreeMap<String, String>) {
    let provision_group = provision_group.map(|g| g.trim().to_lowercase());
    let target_group_map: BTreeMap<String, String> = match target_group_map {
        None => BTreeMap::new(),
        Some(GroupMapSource::Inline(m)) => m,
        Some(GroupMapSource::Path(rel)) => group_map_file(&p.base_dir().join(rel), p),
    }
    .into_iter()
    .map(|(k, v)| (k.trim().to_lowercase(), v))
    .collect();
    if provision_group.is_none() && target_group_map.is_empty() {
        p.add(
            "provision_group",
            "neither `provision_group` nor `target_group_map` is set, so no event would do anything",
            "set `provision_group = \"app:x:users\"` and/or `target_group_map`",
        );
    }
    if let Some(pg) = provision_group
        .as_ref()
        .filter(|g| target_group_map.contains_key(*g))
    {
        p.add(
            "target_group_map",
            format!("`{pg}` is the provision group and also a mapped group"),
            "map only groups other than `provision_group`",
        );
    }
    (provision_group, target_group_map)
}

fn group_map_file(path: &Path, p: &mut Problems<'_>) -> BTreeMap<String, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            p.add(
                "target_group_map",
                format!("cannot read `{}`: {e}", path.display()),
                "give an inline table or the path of a JSON/TOML file",
            );
            return BTreeMap::new();
        }
    };
    let parsed: Result<BTreeMap<String, String>, String> =
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.message().to_string())
        };
    parsed.unwrap_or_else(|e| {
        p.add(
            "target_group_map",
            format!(
                "`{}` is not a map of group -> remote group name: {e}",
                path.display()
            ),
            "write a flat JSON object or TOML table of strings",
        );
        BTreeMap::new()
    })
}

fn retry(f: RetryFile, p: &mut Problems<'_>) -> RetryPolicy {
    p.at_least("retry.max_attempts", f.max_attempts, 1, "10");
    if f.probe_first_s == 0 || f.probe_max_s < f.probe_first_s {
        p.add(
            "retry.probe_max_s",
            format!(
                "probes every {}..{} s: the first wait must be at least 1 s and the longest at least the first",
                f.probe_first_s, f.probe_max_s
            ),
            "set e.g. probe_first_s = 5 and probe_max_s = 60",
        );
    }
    RetryPolicy {
        max_attempts: f.max_attempts,
        max_elapsed: Duration::from_secs(f.max_elapsed_s),
        initial_backoff: Duration::from_millis(f.initial_backoff_ms),
        max_backoff: Duration::from_secs(f.max_backoff_s),
        probe_first: Duration::from_secs(f.probe_first_s),
        probe_max: Duration::from_secs(f.probe_max_s),
    }
}

fn pacing(f: PacingFile, p: &mut Problems<'_>) -> PacingPolicy {
    if !(f.decrease > 0.0 && f.decrease < 1.0) {
        p.add(
            "pacing.decrease",
            format!(
                "{} is not a factor between 0 and 1 (both excluded): the pace must drop when the target throttles",
                f.decrease
            ),
            "set e.g. decrease = 0.7",
        );
    }
    if !(f.increase > 0.0 && f.increase.is_finite()) {
        p.add(
            "pacing.increase",
            format!(
                "{} calls/s per second would never bring the pace back up",
                f.increase
            ),
            "set a positive number, e.g. increase = 1.0",
        );
    }
    if !(f.min_rate > 0.0 && f.min_rate.is_finite()) {
        p.add(
            "pacing.min_rate",
            format!("{} calls/s is not a positive rate", f.min_rate),
            "set a positive number, e.g. min_rate = 1.0",
        );
    }
    PacingPolicy {
        adaptive: f.adaptive,
        decrease: f.decrease,
        increase: f.increase,
        min_rate: f.min_rate,
    }
}

fn on_behalf_of(o: OnBehalfOfFile, p: &mut Problems<'_>) -> Option<OnBehalfOf> {
    let needed_by = "`on_behalf_of`";
    let header = p.required(
        "on_behalf_of.header",
        o.header,
        needed_by,
        "\"X-Caller-Id\"",
    );
    if let Some(h) = &header {
        p.header_name("on_behalf_of.header", h, "X-Caller-Id");
    }
    let value = p.required(
        "on_behalf_of.value",
        o.value,
        needed_by,
        "\"choria={{ actor }}\"",
    );
    if let Some(Err(e)) = value.as_deref().map(crate::template::check_syntax) {
        p.add(
            "on_behalf_of.value",
            format!("bad template: {e}"),
            "fix the template syntax",
        );
    }
    Some(OnBehalfOf {
        header: header?,
        value: value?,
    })
}

/// The kind's own table, validated even when `kind` is missing or unknown,
/// so that its problems show in the same pass.
fn kind(
    kind: Option<Kind>,
    rest: Option<RestFile>,
    scim: Option<ScimFile>,
    p: &mut Problems<'_>,
) -> Option<KindConfig> {
    let kind = p.required("kind", kind, "every provisioner", "\"rest\" or \"scim\"");
    for (table, of, given) in [
        ("rest", Kind::Rest, rest.is_some()),
        ("scim", Kind::Scim, scim.is_some()),
    ] {
        if given && kind.is_some_and(|k| k != of) {
            p.add(
                table,
                format!("`[{table}]` is only for `kind = \"{table}\"`"),
                "remove the table or change `kind`",
            );
        }
    }
    if kind == Some(Kind::Rest) && rest.is_none() {
        p.add(
            "rest",
            "`kind = \"rest\"` needs a `[rest]` table describing the API",
            "add `[rest]` with its operations (see provisioners/example.toml)",
        );
    }
    // Every `[scim]` key has a default, so the table may be left out.
    let scim = match kind {
        Some(Kind::Scim) => Some(scim.unwrap_or_default()),
        _ => scim,
    };
    let rest = rest.and_then(|r| crate::target::rest::config::validate(r, p));
    let scim = scim.and_then(|s| crate::target::scim::config::validate(s, p));
    match kind? {
        Kind::Rest => rest.map(KindConfig::Rest),
        Kind::Scim => scim.map(KindConfig::Scim),
    }
}
