//! The `provisioner` binary: parses the command line and hands over to the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use provisioner::commands;

#[derive(Parser)]
#[command(
    name = "provisioner",
    version,
    about = "Reconciles identity events from RabbitMQ against REST and SCIM targets"
)]
struct Cli {
    /// Worker configuration file.
    #[arg(long, global = true, env = "PROVISIONER_CONFIG", default_value = provisioner::config::DEFAULT_WORKER_FILE)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker: consume every provisioner's queue until SIGTERM/SIGINT.
    Run,
    /// Validate all configuration offline and print a summary (secrets redacted).
    Check,
    /// Publish JSON-lines events (persistent, with publisher confirms).
    Publish {
        /// Queue to publish to.
        #[arg(long, conflicts_with = "provisioner")]
        queue: Option<String>,
        /// Publish where this provisioner consumes (through its partitions,
        /// if any); may be left out when only one is configured.
        #[arg(long)]
        provisioner: Option<String>,
        /// File of JSON lines, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Apply events from a JSON-lines file without a broker.
    Replay {
        /// The provisioner to apply them with.
        #[arg(long)]
        provisioner: String,
        /// Read from the target but only print the writes it would make.
        #[arg(long)]
        dry_run: bool,
        /// File of JSON lines, or `-` for standard input.
        file: String,
    },
    /// A self-contained tour: events through RabbitMQ into an embedded mock target.
    Demo,
    /// Measure the worker against the local RabbitMQ and an in-process mock
    /// target: throughput, latency, CPU and memory next to the broker's and
    /// the target's own limits (docs/benchmarks.md). Build with --release.
    Bench {
        /// Events of the end-to-end runs and of the broker and target limits
        /// [default: 10000; 200 with --quick].
        #[arg(long)]
        events: Option<usize>,
        /// Subjects of each full-sync run, comma-separated
        /// [default: 10000,100000; 1000 with --quick].
        #[arg(long, value_delimiter = ',')]
        sync_subjects: Option<Vec<usize>>,
        /// The mock target's latency for latency hiding and the original's
        /// model, in milliseconds [default: 20].
        #[arg(long)]
        latency_ms: Option<u64>,
        /// `account_sync_rate_limit_ms` of the rate-limit run [default: 10].
        #[arg(long)]
        rate_limit_ms: Option<u64>,
        /// About how long each latency-bound run lasts, in seconds
        /// [default: 6; 1 with --quick].
        #[arg(long)]
        run_seconds: Option<f64>,
        /// A small run: seconds instead of minutes, every measurement.
        #[arg(long)]
        quick: bool,
        /// Only these measurements, comma-separated: broker, target, worker,
        /// hiding, original, rate-limit, sync, coalescing, adaptive.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Print the results as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Run each worker under this command, for profiling, e.g.
        /// "valgrind --tool=callgrind" (split on spaces; the rates are then
        /// the profiler's, not the worker's).
        #[arg(long)]
        worker_wrapper: Option<String>,
    },
    /// Explain one subject: its recent events and outcomes from the journal,
    /// its account and memberships on the target now, and the plan an `add`
    /// would execute now. Reads the target; never writes to it.
    Explain {
        #[arg(long)]
        provisioner: String,
        /// The subject's attributes for the look-up and the plan, as a JSON
        /// object of name -> list of strings (the journal keeps none). Without
        /// them, a match value built from attributes is unknown and the
        /// plan's event has no attributes.
        #[arg(long)]
        attributes: Option<String>,
        /// The local group of the plan's `add` [default: the provision_group].
        #[arg(long)]
        group: Option<String>,
        /// Journal events shown, newest first (at most 200).
        #[arg(long, default_value_t = provisioner::explain::DEFAULT_EVENT_LIMIT)]
        limit: u32,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
        /// The subject, as events name it.
        subject: String,
    },
    /// Inspect or re-queue dead-lettered events.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Print an argon2 hash of a password for `[[admin.users]] password_hash`
    /// (the password is read from standard input, one line).
    HashPassword,
    /// Print a shell completion script (e.g. `provisioner completions bash >
    /// /etc/bash_completion.d/provisioner`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// List parked events with their reasons (they stay parked).
    List {
        #[arg(long)]
        provisioner: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send parked events back to the provisioner's queue.
    Requeue {
        #[arg(long)]
        provisioner: String,
        /// Re-queue at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Re-queue only the event with this id (as `list` shows it).
        #[arg(long)]
        event_id: Option<String>,
        /// Apply the re-queued events past the mass-deprovision guard, once
        /// (for a sync the guard refused that is meant).
        #[arg(long)]
        allow_removals: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run => commands::run(&cli.config).await,
            Command::Check => commands::check(&cli.config),
            Command::Publish {
                queue,
                provisioner,
                file,
            } => {
                let target = match &queue {
                    Some(q) => commands::PublishTarget::Queue(q),
                    None => commands::PublishTarget::Provisioner(provisioner.as_deref()),
                };
                commands::publish(&cli.config, target, &file).await
            }
            Command::Replay {
                provisioner,
                dry_run,
                file,
            } => commands::replay(&cli.config, &provisioner, dry_run, &file).await,
            Command::Demo => commands::demo().await,
            Command::Bench {
                events,
                sync_subjects,
                latency_ms,
                rate_limit_ms,
                run_seconds,
                quick,
                only,
                json,
                worker_wrapper,
            } => {
                let args = commands::BenchArgs {
                    events,
                    sync_subjects,
                    latency_ms,
                    rate_limit_ms,
                    run_seconds,
                    quick,
                    only,
                    json,
                    worker_wrapper,
                };
                commands::bench(&cli.config, args).await
            }
            Command::Explain {
                provisioner,
                attributes,
                group,
                limit,
                json,
                subject,
            } => {
                let args = commands::ExplainArgs {
                    provisioner,
                    subject,
                    attributes,
                    group,
                    limit,
                    json,
                };
                commands::explain(&cli.config, &args).await
            }
            Command::HashPassword => commands::hash_password(),
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "provisioner", &mut std::io::stdout());
                Ok(0)
            }
            Command::DeadLetters { action } => match action {
                DeadLetterAction::List { provisioner, limit } => {
                    commands::dead_letters_list(&cli.config, &provisioner, limit).await
                }
                DeadLetterAction::Requeue {
                    provisioner,
                    limit,
                    event_id,
                    allow_removals,
                } => {
                    let options = commands::RequeueOptions {
                        limit,
                        event_id,
                        allow_removals,
                    };
                    commands::dead_letters_requeue(&cli.config, &provisioner, &options).await
                }
            },
        }
    })?;
    std::process::exit(code)
}
