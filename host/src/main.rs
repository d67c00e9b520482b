//! `sipwasm`: run the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sipwasm::config::{Config, DEFAULT_CONFIG};
use sipwasm::server::Server;
use tracing_subscriber::EnvFilter;

/// mimalloc: the SIP path allocates many small, short-lived strings; glibc's malloc
/// spent a third of the core's time on them (see the README's benchmark section).
/// Blocks over 64 KiB get mappings of their own (`sipwasm::memory`).
#[global_allocator]
static GLOBAL: sipwasm::memory::Allocator = sipwasm::memory::Allocator;

/// SIP server for browsers and phones whose policy runs in sandboxed WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SIPWASM_COMMIT"), ")"),
    about
)]
struct Args {
    /// Configuration file (TOML). Without it the embedded default runs: ws on
    /// 127.0.0.1:8080, wss on 127.0.0.1:8443, the seed-policy plugin.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `server.data-dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Prints the embedded default configuration and exits.
    #[arg(long)]
    print_default_config: bool,
    /// Checks the configuration as a start would (data directory, certificates, keys,
    /// every plugin compiled) without binding its listen addresses or joining a
    /// cluster, then exits.
    #[arg(long)]
    check: bool,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info", value_name = "FILTER", global = true)]
    log: String,
    /// Log lines as text, or as one JSON object a line (time, level, target, message,
    /// call-id, flow, source, plugin, fields) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The user store logins are checked against (`[users]`: HA1 digests, no
    /// passwords). Reads `--config` (or the embedded default) for its file and realm.
    #[command(subcommand)]
    User(UserCommand),
    /// Speaks the control API of a running server (`[admin]` in --config, or --url).
    Ctl(CtlArgs),
}

#[derive(clap::Args, Debug)]
struct CtlArgs {
    /// The admin listener, `http://HOST:PORT` (default: `admin.listen` of --config).
    #[arg(long, global = true)]
    url: Option<String>,
    /// The admin token (default: SIPWASM_ADMIN_TOKEN, `admin.token`, or the data
    /// directory's `admin-token`).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Prints the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Version, uptime and counts.
    Status,
    /// Registered bindings (this node's), or removes some.
    Registrations {
        /// Only this address-of-record.
        #[arg(long)]
        aor: Option<String>,
        /// Only AoRs starting with this (e.g. `sip:alice`).
        #[arg(long)]
        prefix: Option<String>,
        /// Only this cluster node's.
        #[arg(long)]
        node: Option<String>,
        /// At most this many bindings (default 1000, at most 10000).
        #[arg(long)]
        limit: Option<usize>,
        /// Removes this AoR's bindings (all, or --binding's).
        #[arg(long, value_name = "AOR", conflicts_with_all = ["aor", "prefix", "node", "limit"])]
        remove: Option<String>,
        /// With --remove: only the binding with this id.
        #[arg(long, requires = "remove")]
        binding: Option<u64>,
    },
    /// Live flows (connections), or closes one.
    Flows {
        /// Closes the flow with this id.
        #[arg(long, value_name = "ID")]
        close: Option<u64>,
        /// With --close: the reason (a WebSocket's close frame carries it).
        #[arg(long, requires = "close")]
        reason: Option<String>,
    },
    /// Transactions in flight.
    Transactions {
        /// At most this many listed.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Dialogs in flight.
    Dialogs {
        /// At most this many listed.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Plugins with their calls and times, or reloads one.
    Plugins {
        /// Compiles this plugin's file again and swaps it in.
        #[arg(long, value_name = "NAME")]
        reload: Option<String>,
    },
    /// Drain mode: no new connections or dialogs; those in progress go on.
    Drain {
        /// Stop the server once no dialog or transaction is left.
        #[arg(long)]
        exit: bool,
        /// With --exit: stop after this many seconds even if calls are left.
        #[arg(long, requires = "exit", value_name = "SECONDS")]
        exit_after: Option<u64>,
        /// Wait until drained (or the server stopped), printing what is left.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        timeout: u64,
        /// Leaves drain mode.
        #[arg(long, conflicts_with_all = ["exit", "wait", "exit_after"])]
        cancel: bool,
    },
    /// Reads the configuration file again and applies what can change without a
    /// restart (plugins, limits); names what needs one.
    Reload,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Adds a user or sets a new password: asked twice on a terminal, else the first
    /// line of standard input (`echo secret | sipwasm user add alice`).
    Add {
        /// The user name (the user part of its SIP address).
        name: String,
        /// The realm (default: `users.realm`, else the first of `server.domains`).
        #[arg(long)]
        realm: Option<String>,
    },
    /// Removes a user from a realm.
    Remove {
        /// The user name.
        name: String,
        /// The realm (default as for `add`).
        #[arg(long)]
        realm: Option<String>,
    },
    /// Lists the users: name, realm, digests kept.
    List,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Prints a component's imports and exports and whether this host can run it.
    Check {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Runs a plugin on a request file and prints what the host would send: a raw
    /// HTTP request for an http-handler, a SIP request for a sip-router.
    Run {
        /// The component (.wasm).
        file: PathBuf,
        /// The request: raw HTTP/1.1 (http-handler) or SIP (sip-router); LF line ends
        /// are fine.
        #[arg(long, value_name = "REQUEST.http")]
        request: PathBuf,
        /// The plugin's `config` table as TOML, e.g. 'web-ports = [8080]'.
        #[arg(long, value_name = "TABLE")]
        config: Option<String>,
        /// The listener port the request reached.
        #[arg(long, default_value_t = 8080)]
        local_port: u16,
        /// The request came over TLS (a wss listener).
        #[arg(long)]
        tls: bool,
    },
}

fn main() -> ExitCode {
    sipwasm::memory::tune();
    let args = Args::parse();
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    // A bare level applies to sipwasm; wasmtime's compiler stays at warn unless the
    // filter names it (`--log debug,cranelift_codegen=debug`).
    let directives = if args.log.contains('=') {
        args.log.clone()
    } else {
        format!(
            "{0},cranelift_codegen=warn,wasmtime=warn,wasmtime_internal_cranelift=warn",
            args.log
        )
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&directives))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            tracing_subscriber::registry()
                .with(filter)
                .with(sipwasm::logs::JsonLines)
                .init();
        }
    }

    raise_open_files_limit();

    if let Some(Command::Plugin(cmd)) = &args.command {
        return plugin_command(cmd);
    }

    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sipwasm: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::embedded_default(),
    };
    if let Some(d) = args.data_dir {
        config.server.data_dir = Some(d);
    }
    if let Some(Command::User(cmd)) = &args.command {
        return user_command(cmd, &config);
    }
    if let Some(Command::Ctl(ctl)) = &args.command {
        return ctl_command(ctl, &config);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(sipwasm::memory::on_thread_park)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipwasm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let embedded = args.config.is_none();
    let result = runtime.block_on(async move {
        if args.check {
            Server::check(config).await?;
            tracing::info!("configuration and plugins are valid");
            return Ok(());
        }
        let server = Server::bind(config).await?;
        if embedded {
            tracing::info!(
                "try it: open http://localhost:8080/ and http://127.0.0.1:8080/ in two \
                 browser tabs (two addresses keep two logins), log in as two names (any \
                 name on this machine), then call or message one from the other"
            );
        }
        server.run(stop_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipwasm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ctl_command(args: &CtlArgs, config: &Config) -> ExitCode {
    use sipwasm::ctl::{Endpoint, encode_segment, render};
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("SIPWASM_ADMIN_TOKEN").ok());
    let endpoint = match Endpoint::resolve(args.url.as_deref(), token, config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sipwasm ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let with_limit = |path: String, limit: Option<usize>| match limit {
        Some(n) => format!(
            "{path}{}limit={n}",
            if path.contains('?') { '&' } else { '?' }
        ),
        None => path,
    };
    let (method, path, body, kind) = match &args.command {
        CtlCommand::Status => ("GET", "/api/v1/status".to_string(), None, "status"),
        CtlCommand::Registrations {
            remove: Some(aor),
            binding,
            ..
        } => {
            let mut path = format!("/api/v1/registrations/{}", encode_segment(aor));
            if let Some(id) = binding {
                path.push_str(&format!("/bindings/{id}"));
            }
            ("DELETE", path, None, "removed")
        }
        CtlCommand::Registrations {
            aor: Some(aor),
            node: None,
            prefix: None,
            limit: None,
            ..
        } => (
            "GET",
            format!("/api/v1/registrations/{}", encode_segment(aor)),
            None,
            "registration",
        ),
        CtlCommand::Registrations {
            aor,
            prefix,
            node,
            limit,
            ..
        } => {
            let mut q = Vec::new();
            for (k, v) in [("aor", aor), ("prefix", prefix), ("node", node)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode_segment(v)));
                }
            }
            if let Some(n) = limit {
                q.push(format!("limit={n}"));
            }
            let path = if q.is_empty() {
                "/api/v1/registrations".to_string()
            } else {
                format!("/api/v1/registrations?{}", q.join("&"))
            };
            ("GET", path, None, "registrations")
        }
        CtlCommand::Flows {
            close: Some(id),
            reason,
        } => (
            "POST",
            format!("/api/v1/flows/{id}/close"),
            Some(serde_json::json!({ "reason": reason })),
            "closed",
        ),
        CtlCommand::Flows { close: None, .. } => {
            ("GET", "/api/v1/flows".to_string(), None, "flows")
        }
        CtlCommand::Transactions { limit } => (
            "GET",
            with_limit("/api/v1/transactions".into(), *limit),
            None,
            "transactions",
        ),
        CtlCommand::Dialogs { limit } => (
            "GET",
            with_limit("/api/v1/dialogs".into(), *limit),
            None,
            "dialogs",
        ),
        CtlCommand::Plugins { reload: Some(name) } => (
            "POST",
            format!("/api/v1/plugins/{}/reload", encode_segment(name)),
            None,
            "reloaded",
        ),
        CtlCommand::Plugins { reload: None } => {
            ("GET", "/api/v1/plugins".to_string(), None, "plugins")
        }
        CtlCommand::Drain { cancel: true, .. } => {
            ("DELETE", "/api/v1/drain".to_string(), None, "drain")
        }
        CtlCommand::Drain {
            exit, exit_after, ..
        } => (
            "POST",
            "/api/v1/drain".to_string(),
            Some(serde_json::json!({ "exit": exit, "exit_after": exit_after })),
            "drain",
        ),
        CtlCommand::Reload => ("POST", "/api/v1/reload".to_string(), None, "reload"),
    };
    let answer = endpoint.request(method, &path, body.as_ref());
    let (status, value) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sipwasm ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{value}");
    } else if status < 300 {
        print!("{}", render(kind, &value));
    }
    if status >= 300 {
        let why = value
            .get("error")
            .map(sipwasm::ctl::cell)
            .unwrap_or_else(|| sipwasm::ctl::cell(&value));
        eprintln!("sipwasm ctl: {status}: {why}");
        return ExitCode::FAILURE;
    }
    if let CtlCommand::Drain {
        wait: true,
        timeout,
        cancel: false,
        ..
    } = &args.command
    {
        return wait_drained(
            &endpoint,
            std::time::Duration::from_secs(*timeout),
            args.json,
        );
    }
    ExitCode::SUCCESS
}

/// Polls the drain state until nothing is left (or the server stopped, when it was to
/// exit), printing what is left when it changes.
fn wait_drained(
    endpoint: &sipwasm::ctl::Endpoint,
    timeout: std::time::Duration,
    json: bool,
) -> ExitCode {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::new();
    // Whether the server was last seen draining to exit: only then is a server that
    // stopped answering taken as stopped.
    let mut exiting = false;
    let mut failures = 0;
    while std::time::Instant::now() < deadline {
        match endpoint.request("GET", "/api/v1/drain", None) {
            Ok((200, v)) => {
                failures = 0;
                let line = if json {
                    format!("{v}\n")
                } else {
                    sipwasm::ctl::render("drain", &v)
                };
                if line != last {
                    print!("{line}");
                    last = line;
                }
                exiting = v["exit_when_empty"] == serde_json::Value::Bool(true);
                if v["empty"] == serde_json::Value::Bool(true)
                    && v["exit_when_empty"] != serde_json::Value::Bool(true)
                {
                    return ExitCode::SUCCESS;
                }
            }
            Ok((status, v)) => {
                eprintln!("sipwasm ctl: {status}: {}", sipwasm::ctl::cell(&v["error"]));
                return ExitCode::FAILURE;
            }
            // The server stopped after draining, as asked: nothing listens any more.
            Err(e) if exiting && e.contains("Connection refused") => {
                println!("the server has stopped");
                return ExitCode::SUCCESS;
            }
            // Another failure (the listener busy, a slow answer) is tried again.
            Err(e) => {
                failures += 1;
                if failures >= 5 {
                    eprintln!("sipwasm ctl: {e}");
                    return ExitCode::FAILURE;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
                continue;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    eprintln!(
        "sipwasm ctl: still not drained after {} s",
        timeout.as_secs()
    );
    ExitCode::FAILURE
}

fn user_command(cmd: &UserCommand, config: &Config) -> ExitCode {
    let file = config.users_file();
    let realm_of = |r: &Option<String>| r.clone().unwrap_or_else(|| config.users_realm());
    let result = match cmd {
        UserCommand::Add { name, realm } => {
            let realm = realm_of(realm);
            sipwasm::users::read_password(&format!("Password for {name} in {realm}: "))
                .and_then(|pw| sipwasm::users::add(&file, name, &realm, &pw))
                .map(|replaced| {
                    let what = if replaced {
                        "password changed"
                    } else {
                        "added"
                    };
                    eprintln!("{name} in realm {realm}: {what} ({})", file.display());
                })
        }
        UserCommand::Remove { name, realm } => {
            let realm = realm_of(realm);
            match sipwasm::users::remove(&file, name, &realm) {
                Ok(true) => {
                    eprintln!("{name} in realm {realm}: removed ({})", file.display());
                    Ok(())
                }
                Ok(false) => Err(format!(
                    "no user {name} in realm {realm} in {}",
                    file.display()
                )),
                Err(e) => Err(e),
            }
        }
        UserCommand::List => sipwasm::users::list(&file).map(|lines| {
            for l in lines {
                println!("{l}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipwasm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plugin_command(cmd: &PluginCommand) -> ExitCode {
    match cmd {
        PluginCommand::Check { file } => match sipwasm::plugin::tools::check(file) {
            Ok(report) => {
                print!("{}", report.text);
                if report.runnable {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("sipwasm: {e:#}");
                ExitCode::FAILURE
            }
        },
        PluginCommand::Run {
            file,
            request,
            config,
            local_port,
            tls,
        } => {
            let bytes = match std::fs::read(request) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("sipwasm: cannot read {}: {e}", request.display());
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sipwasm: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = sipwasm::plugin::tools::RunOptions {
                plugin: file,
                request: &bytes,
                config: config.as_deref(),
                local_port: *local_port,
                tls: *tls,
            };
            match runtime.block_on(sipwasm::plugin::tools::run(opts)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sipwasm: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Every connection is a file descriptor: raise the soft limit to the hard one.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(open_files = n, "open files limit"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
