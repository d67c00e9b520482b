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
    /// Checks the configuration and loads every plugin, then exits.
    #[arg(long)]
    check: bool,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info", value_name = "FILTER", global = true)]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

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
        let server = Server::bind(config).await?;
        if args.check {
            tracing::info!("configuration and plugins are valid");
            return Ok(());
        }
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
