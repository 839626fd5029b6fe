//! The `ordo` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use ordo::config::{Cli, Command, EventsArgs};
use ordo::{Stores, serve};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ordo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve_with(cli.serve).await,
            Some(Command::Serve(args)) => serve_with(args).await,
            Some(Command::Events(args)) => print_events(args).await,
            Some(Command::Replay(args)) => ordo::tools::replay(args).await,
            Some(Command::Snapshot(args)) => ordo::tools::snapshot(args).await,
            Some(Command::Erase(args)) => ordo::tools::erase(args).await,
            Some(Command::RotateMasterKey(args)) => ordo::tools::rotate_master_key(args).await,
            Some(Command::Status(args)) => ordo::status::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter of `RUST_LOG` (default `info`). The PostgreSQL driver logs every
/// statement's parameters (customers' names and e-mails among them) at debug: it stays at
/// info unless `RUST_LOG` names it, so that turning on debug logs for ordo does not put
/// personal data in the log.
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let spec = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    let spec = if spec.contains("tokio_postgres") {
        spec.to_string()
    } else {
        format!("{spec},tokio_postgres=info")
    };
    EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=info"))
}

async fn serve_with(args: ordo::config::ServeArgs) -> anyhow::Result<()> {
    // The role and the token files first: a refusal stops the start before any store is
    // opened (or created).
    args.role.check_stores(&args.stores)?;
    let settings = ordo::Settings {
        admin_token: ordo::access::admin_token(&args)?,
        api_tokens: ordo::access::api_tokens(args.api_token_file.as_deref())?,
        event_stream: ordo_http::StreamLimits {
            max_clients: args.stream_max_clients,
            ..ordo_http::StreamLimits::default()
        },
        limits: args.limits(),
        role: args.role,
    };
    let stores = Stores::open(&args.stores).await?;
    serve(&args.listen, stores, settings).await
}

async fn print_events(args: EventsArgs) -> anyhow::Result<()> {
    let stores = Stores::open(&args.stores).await?;
    ordo::events::print(
        stores.events.as_ref(),
        args.aggregate.as_deref(),
        args.follow,
    )
    .await
}
