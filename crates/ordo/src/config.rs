//! Typed configuration: every flag has an environment twin.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::role::Role;

/// ordo: an event-sourced order service.
#[derive(Debug, Parser)]
#[command(name = "ordo", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Print events as JSON lines, oldest first.
    Events(EventsArgs),
    /// Rebuild read models from the events, with a progress bar. With no option, every
    /// read model is rebuilt beside the live ones and switched over when complete.
    Replay(ReplayArgs),
    /// Take a snapshot of one order now.
    Snapshot(SnapshotArgs),
    /// Erase one customer's personal data (crypto-shredding): destroy their keys, record
    /// the erasure and rebuild their orders' read models; prints what it did as JSON.
    Erase(EraseArgs),
    /// Rewrap every data key under the master key now configured, opening those not yet
    /// rewrapped with --previous-master-key-file (docs/privacy.md, "Rotating the master
    /// key"). Safe to run while the service runs, and to run again.
    RotateMasterKey(RotateArgs),
    /// Report the stores, the projections (position, lag, state, parked events) and any
    /// running rebuild, read from the stores directly; with the live state of a server
    /// that answers. Changes nothing. Exits non-zero when something does not answer.
    Status(StatusArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Repair every order with an event at or after this RFC 3339 instant.
    #[arg(long, value_name = "RFC3339", conflicts_with = "aggregate")]
    pub from: Option<String>,
    /// Repair one order.
    #[arg(long, value_name = "ID")]
    pub aggregate: Option<String>,
    #[command(flatten)]
    pub stores: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON (keys documented in docs/cli.md) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The server to ask for the projections' live state [default: http://<--listen>].
    /// A server named here that does not answer is a failure; the default one is only
    /// reported.
    #[arg(long, env = "ORDO_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Where a server on these stores listens (asked when --server is not given).
    #[arg(long, env = "ORDO_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// The server's admin token, to read its projections' live state.
    #[arg(long, env = "ORDO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    #[command(flatten)]
    pub stores: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// The customer's e-mail address (compared case-insensitively).
    pub email: String,
    #[command(flatten)]
    pub stores: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub stores: StoreArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// The order id.
    pub id: String,
    #[command(flatten)]
    pub stores: StoreArgs,
}

/// Where the data lives. Shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded stores.
    #[arg(long, env = "ORDO_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Event store URL: sqlite://PATH, redis://HOST:PORT,
    /// redis+cluster://HOST:PORT[,HOST:PORT...] or postgres://... [default: embedded in the
    /// data dir]
    #[arg(long, env = "ORDO_EVENT_STORE", global = true, hide_env_values = true)]
    pub event_store: Option<String>,
    /// Read store URL: sqlite://PATH or postgres://... [default: embedded in the data dir]
    #[arg(long, env = "ORDO_READ_STORE", global = true, hide_env_values = true)]
    pub read_store: Option<String>,
    /// Snapshot an order every this many events (0: only on demand).
    #[arg(
        long,
        env = "ORDO_SNAPSHOT_EVERY",
        default_value_t = 100,
        global = true
    )]
    pub snapshot_every: u64,
    /// Read models that were never projected into (a new deployment, a deleted read
    /// store) are loaded in bulk at start, like a rebuild, when the event store holds at
    /// least this many events; below it they catch up batch by batch.
    #[arg(
        long,
        env = "ORDO_BULK_LOAD_FROM",
        default_value_t = ordo_app::read_side::BULK_START_MIN_EVENTS,
        global = true
    )]
    pub bulk_load_from: u64,
    /// How much lower than the request threads' the projection threads' CPU priority is
    /// (a nice increment, 1 to 19; 0: the same threads). Under full load the commands
    /// (and queries) go first, and rebuilds yield to them; the projection lag grows.
    #[arg(
        long,
        env = "ORDO_PROJECTION_NICE",
        default_value_t = DEFAULT_PROJECTION_NICE,
        value_parser = clap::value_parser!(u8).range(0..=19),
        global = true
    )]
    pub projection_nice: u8,
    /// Seconds within which a projector renews the leases of its shards; a lease not
    /// renewed for this long is taken over by another projector. Shorter: a dead
    /// projector's shards move sooner; longer: a projector paused (a long GC-like stall,
    /// a slow disk, a network blip) is less often taken for dead. Only where the read
    /// models are in PostgreSQL (the projection is divided into shards there).
    #[arg(
        long,
        env = "ORDO_LEASE_TTL",
        default_value_t = DEFAULT_LEASE_TTL_S,
        value_parser = clap::value_parser!(u64).range(1..=600),
        global = true
    )]
    pub lease_ttl: u64,
    /// Key store URL, where each customer's data key lives (docs/privacy.md):
    /// sqlite://PATH, redis://..., redis+cluster://... or postgres://... [default: beside
    /// the event store: keys.db in the data dir for the embedded store, the event store
    /// itself otherwise]
    #[arg(long, env = "ORDO_KEY_STORE", global = true, hide_env_values = true)]
    pub key_store: Option<String>,
    /// A file holding the master key (64 hex digits), which wraps every data key. The
    /// environment variable ORDO_MASTER_KEY may hold the key itself instead. [default:
    /// master.key in the data dir, generated on a new key store]
    #[arg(long, env = "ORDO_MASTER_KEY_FILE", value_name = "PATH", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// While rotating the master key: a file holding the previous one, which still opens
    /// the data keys not yet rewrapped (`ordo rotate-master-key`).
    #[arg(
        long,
        env = "ORDO_PREVIOUS_MASTER_KEY_FILE",
        value_name = "PATH",
        global = true
    )]
    pub previous_master_key_file: Option<PathBuf>,
}

/// See [`StoreArgs::projection_nice`].
pub const DEFAULT_PROJECTION_NICE: u8 = 0;

/// See [`StoreArgs::lease_ttl`].
pub const DEFAULT_LEASE_TTL_S: u64 = 10;

impl StoreArgs {
    /// The embedded stores in `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            event_store: None,
            read_store: None,
            snapshot_every: 100,
            bulk_load_from: ordo_app::read_side::BULK_START_MIN_EVENTS,
            projection_nice: DEFAULT_PROJECTION_NICE,
            lease_ttl: DEFAULT_LEASE_TTL_S,
            key_store: None,
            master_key_file: None,
            previous_master_key_file: None,
        }
    }

    pub fn event_store_url(&self) -> String {
        self.event_store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("events.db").display()))
    }

    /// The key store: as given, or beside the event store.
    pub fn key_store_url(&self) -> String {
        if let Some(url) = &self.key_store {
            return url.clone();
        }
        let events = self.event_store_url();
        match crate::sqlite_path(&events) {
            Some(path) => {
                let dir = std::path::Path::new(path)
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                format!("sqlite://{}", dir.join("keys.db").display())
            }
            None => events,
        }
    }

    pub fn read_store_url(&self) -> String {
        self.read_store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("read.db").display()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ORDO_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: String,
    /// What this process does: the API, the projections, or both.
    ///
    /// Roles other than all need stores several processes share (PostgreSQL, or Redis
    /// for the events with PostgreSQL for the read models); on the embedded SQLite
    /// stores they are refused at start.
    #[arg(long, env = "ORDO_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Token for the admin endpoints (Authorization: Bearer TOKEN).
    #[arg(long, env = "ORDO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// A file holding the admin token (instead of --admin-token).
    #[arg(long, env = "ORDO_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// A file of `TOKEN SCOPE` lines (scope read or write): the API then needs
    /// Authorization: Bearer TOKEN (docs/api.md, "Authentication").
    #[arg(long, env = "ORDO_API_TOKEN_FILE", value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,
    /// Clients of the event stream (GET /api/v1/events/stream) served at once; one more
    /// is answered 503 with Retry-After (0 turns the stream off).
    #[arg(long, env = "ORDO_STREAM_MAX_CLIENTS", default_value_t = ordo_http::StreamLimits::default().max_clients)]
    pub stream_max_clients: usize,
    /// Seconds a new connection has to send a complete request head; then it is closed.
    #[arg(long, env = "ORDO_HEADER_TIMEOUT", value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub header_timeout: Duration,
    /// Seconds every request but the event stream has to be answered; past it the
    /// answer is 503 with Retry-After. A consistency wait ends before it.
    #[arg(long, env = "ORDO_REQUEST_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub request_timeout: Duration,
    /// Seconds a keep-alive connection may wait for its next complete request head.
    #[arg(long, env = "ORDO_IDLE_TIMEOUT", value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "ORDO_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Operations in flight or waiting at once for each store (commands and history on
    /// the event store, queries on the read models) and for consistency waits; the next
    /// is answered 503 with Retry-After at once instead of queueing.
    #[arg(long, env = "ORDO_MAX_PENDING", default_value_t = crate::server::DEFAULT_MAX_PENDING as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending: u32,
    #[command(flatten)]
    pub stores: StoreArgs,
}

impl ServeArgs {
    /// The timeouts and the connection cap these flags name.
    pub fn limits(&self) -> crate::Limits {
        crate::Limits {
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            max_pending: self.max_pending as usize,
        }
    }
}

/// A duration in seconds, fractions allowed (`0.5`), more than zero and at most a day.
pub fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let seconds: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds (such as 10 or 0.5)"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!(
            "{raw:?}: give more than 0 and at most 86400 seconds"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{raw:?}: {e}"))
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this order's events.
    #[arg(long)]
    pub aggregate: Option<String>,
    /// Keep printing new events as they are appended.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub stores: StoreArgs,
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("the admin token must not be empty".into())
        } else {
            Ok(Secret(s.to_string()))
        }
    }
}

/// A store URL with any password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("sqlite://./data/events.db"),
            "sqlite://./data/events.db"
        );
    }

    #[test]
    fn the_cli_parses_with_no_arguments_as_serve_with_defaults() {
        let cli = Cli::try_parse_from(["ordo"]).expect("parse");
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen, "127.0.0.1:3000");
        assert_eq!(cli.serve.stream_max_clients, 256);
        let limits = cli.serve.limits();
        let defaults = crate::Limits::default();
        assert_eq!(limits.header_timeout, defaults.header_timeout);
        assert_eq!(limits.request_timeout, defaults.request_timeout);
        assert_eq!(limits.idle_timeout, defaults.idle_timeout);
        assert_eq!(limits.max_connections, defaults.max_connections);
        assert_eq!(cli.serve.stores.data_dir, PathBuf::from("./data"));
        assert_eq!(cli.serve.role, Role::All);
    }

    #[test]
    fn the_role_is_all_api_or_projector() {
        for (raw, role) in [
            ("all", Role::All),
            ("api", Role::Api),
            ("projector", Role::Projector),
        ] {
            let cli = Cli::try_parse_from(["ordo", "serve", "--role", raw]).expect("parse");
            let Some(Command::Serve(args)) = cli.command else {
                panic!("serve")
            };
            assert_eq!(args.role, role);
            assert_eq!(role.to_string(), raw);
        }
        assert!(Cli::try_parse_from(["ordo", "--role", "reader"]).is_err());
    }

    #[test]
    fn timeouts_are_seconds_with_fractions() {
        assert_eq!(parse_seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "soon", "NaN", "inf", "1e9", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad} accepted");
        }
        let cli =
            Cli::try_parse_from(["ordo", "--header-timeout", "0.25", "--max-connections", "2"])
                .expect("parse");
        assert_eq!(
            cli.serve.limits().header_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(cli.serve.limits().max_connections, 2);
        assert!(Cli::try_parse_from(["ordo", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s: Secret = "hunter2".parse().expect("secret");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn clap_configuration_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
