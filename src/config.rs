//! Server settings: the command line and `WSCHAT_*` environment variables of
//! PROTOCOL section 8, parsed by hand into a [`Config`].
//!
//! A flag wins over its variable; a bad flag, value or variable is a
//! [`ConfigError`] whose text names it (the binary prints it and exits 2).

use crate::engine::forwarded::{TrustedProxy, parse_trusted_proxy};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to know before it binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to bind; `0.0.0.0` like the PHP servers, `::` for IPv6.
    pub host: String,
    /// TCP port; 0 asks the kernel for a free one (tests do this).
    pub port: u16,
    /// Serve the echo application at `/echo`.
    pub echo: bool,
    /// Allowed `Origin` values, lower-cased; empty means every origin.
    pub allowed_origins: Vec<String>,
    /// Largest reassembled message accepted (close 1009 above it).
    pub max_message_bytes: usize,
    /// Longest chat `message` in Unicode scalar values.
    pub max_chat_chars: usize,
    /// Chat messages per second per connection; 0 turns rate limiting off.
    pub rate_limit: u32,
    /// Open connections of any kind before new ones get 503.
    pub max_connections: usize,
    /// Pending output per connection before it is dropped with 1008.
    pub max_output_bytes: usize,
    /// Pending output of all connections together before the largest
    /// backlogs are dropped.
    pub max_total_output_bytes: usize,
    /// Time allowed to deliver the whole request head.
    pub handshake_timeout: Duration,
    /// Silence before a ping; as long again and the peer is dropped. Zero: off.
    pub idle_timeout: Duration,
    /// Time to wait for the peer's close reply after the server's close.
    pub close_timeout: Duration,
    /// Time to wait for close replies at shutdown.
    pub shutdown_timeout: Duration,
    /// Broadcast messages kept for newcomers (section 9); 0 turns history off.
    pub history: usize,
    /// PEM certificate chain and key: both set means the port speaks TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The admin API's bearer token (section 11); `None` disables the API.
    pub admin_token: Option<String>,
    /// Publish every line typed on standard input as an announcement.
    pub console: bool,
    /// Redis URL joining this node to a cluster (section 12).
    pub redis: Option<String>,
    /// Prefix of every Redis key and channel of the cluster.
    pub cluster_name: String,
    /// `SO_REUSEPORT`, so that several nodes can share one port.
    pub reuse_port: bool,
    /// A node silent this long is presumed dead; its names are freed.
    pub node_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed for the client
    /// address in log lines.
    pub trusted_proxies: Vec<TrustedProxy>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".to_string(),
            port: 9000,
            echo: false,
            allowed_origins: Vec::new(),
            max_message_bytes: 65536,
            max_chat_chars: 2000,
            rate_limit: 10,
            max_connections: 10000,
            max_output_bytes: 1 << 20,
            max_total_output_bytes: 256 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(2),
            history: 100,
            tls_cert: None,
            tls_key: None,
            admin_token: None,
            console: false,
            redis: None,
            cluster_name: "wschat".to_string(),
            reuse_port: false,
            node_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
        }
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// A flag, value or variable that could not be used; the text names it.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The `--help` text.
pub const HELP: &str = "\
wschat - a WebSocket chat server (one process, one thread, RFC 6455)

USAGE:
    wschat [PORT] [OPTIONS]

    PORT defaults to 9000. Open http://localhost:PORT/ in a browser to chat.
    Old PHP-tutorial clients can connect to ws://HOST:PORT/<any path>.

OPTIONS (each also read from the environment variable shown; a flag wins):
    --host ADDR                 address to bind, :: for IPv6        [WSCHAT_HOST, default 0.0.0.0]
    --echo                      also serve an echo WebSocket at /echo [WSCHAT_ECHO=1|0]
    --allowed-origin ORIGIN     accept browser handshakes only from this Origin;
                                repeatable (e.g. https://chat.example.com)
                                                                    [WSCHAT_ALLOWED_ORIGIN, comma-separated]
    --max-message-bytes N       largest WebSocket message accepted  [WSCHAT_MAX_MESSAGE_BYTES, default 65536]
    --max-chat-chars N          longest chat message in characters  [WSCHAT_MAX_CHAT_CHARS, default 2000]
    --rate-limit N              chat messages per second per client, 0 = off
                                                                    [WSCHAT_RATE_LIMIT, default 10]
    --max-connections N         open connections before new ones get 503
                                                                    [WSCHAT_MAX_CONNECTIONS, default 10000]
    --max-output-bytes N        unsent bytes a slow client may have queued before it is dropped
                                                                    [WSCHAT_MAX_OUTPUT_BYTES, default 1048576]
    --max-total-output-bytes N  unsent bytes of all clients together; past it, the largest
                                backlogs are dropped      [WSCHAT_MAX_TOTAL_OUTPUT_BYTES, default 268435456]
    --handshake-timeout S       seconds a client has to send its request [WSCHAT_HANDSHAKE_TIMEOUT, default 10]
    --idle-timeout S            seconds of silence before a ping; as long again and the client
                                is dropped; 0 = no keepalive        [WSCHAT_IDLE_TIMEOUT, default 30]
    --close-timeout S           seconds to wait for a client's close reply [WSCHAT_CLOSE_TIMEOUT, default 5]
    --shutdown-timeout S        seconds to wait for close replies on SIGINT/SIGTERM
                                                                    [WSCHAT_SHUTDOWN_TIMEOUT, default 2]
    --history N                 broadcast messages kept for newcomers, 0-1000, 0 = off
                                                                    [WSCHAT_HISTORY, default 100]
    --tls-cert FILE             PEM certificate chain: the port speaks https/wss [WSCHAT_TLS_CERT]
    --tls-key FILE              PEM private key of that certificate   [WSCHAT_TLS_KEY]
    --admin-token TOKEN         enable the admin API (/api/...) with this bearer token,
                                16-256 printable characters         [WSCHAT_ADMIN_TOKEN]
    --admin-token-file FILE     the same, read from a file            [WSCHAT_ADMIN_TOKEN_FILE]
    --console                   publish each line typed on stdin as an announcement
                                                                    [WSCHAT_CONSOLE=1|0]
    --redis URL                 join a cluster through Redis: redis://[[USER]:PASS@]HOST[:PORT][/DB]
                                                                    [WSCHAT_REDIS]
    --cluster-name NAME         prefix of the cluster's Redis keys  [WSCHAT_CLUSTER_NAME, default wschat]
    --reuse-port                share the port with other nodes (SO_REUSEPORT) [WSCHAT_REUSE_PORT=1|0]
    --node-timeout S            a silent node is presumed dead after this [WSCHAT_NODE_TIMEOUT, default 10]
    --trusted-proxy ADDR[/LEN]  a reverse proxy whose X-Forwarded-For names the client in
                                log lines; repeatable (e.g. 127.0.0.1, 10.0.0.0/8)
                                                                    [WSCHAT_TRUSTED_PROXY, comma-separated]
    -h, --help                  print this help
    -V, --version               print the version

LOGGING:
    RUST_LOG=info (default) logs start-up and every connection opened and closed;
    RUST_LOG=debug adds protocol details. Message texts are never logged at info.

EXAMPLES:
    wschat                          # chat on port 9000, every interface
    wschat 8080 --host 127.0.0.1    # only this machine, port 8080
    wschat --echo --max-message-bytes 16777216   # for conformance suites
";

/// Every setting that takes a value, with its flag name; the variable name
/// is derived from it (`--max-connections` → `WSCHAT_MAX_CONNECTIONS`).
const VALUE_FLAGS: &[&str] = &[
    "--host",
    "--allowed-origin",
    "--max-message-bytes",
    "--max-chat-chars",
    "--rate-limit",
    "--max-connections",
    "--max-output-bytes",
    "--max-total-output-bytes",
    "--handshake-timeout",
    "--idle-timeout",
    "--close-timeout",
    "--shutdown-timeout",
    "--history",
    "--tls-cert",
    "--tls-key",
    "--admin-token",
    "--admin-token-file",
    "--redis",
    "--cluster-name",
    "--node-timeout",
    "--trusted-proxy",
];

/// Settings that are switched on by their flag alone.
const BOOL_FLAGS: &[&str] = &["--echo", "--console", "--reuse-port"];

/// Longest `--history` accepted (section 9).
pub const MAX_HISTORY: usize = 1000;

fn env_name(flag: &str) -> String {
    format!(
        "WSCHAT_{}",
        flag.trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase()
    )
}

/// Parses the arguments (without the program name) and the environment,
/// given as a lookup so tests need not touch the real environment.
pub fn parse<I, S>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config::default();
    // Environment first, so that flags read afterwards overwrite it.
    for flag in VALUE_FLAGS {
        let var = env_name(flag);
        if let Some(value) = env(&var) {
            if *flag == "--trusted-proxy" {
                config.trusted_proxies = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|v| trusted_proxy(v, &var))
                    .collect::<Result<_, _>>()?;
            } else if *flag == "--allowed-origin" {
                config.allowed_origins = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect();
            } else {
                apply(&mut config, flag, &value, &var)?;
            }
        }
    }
    for flag in BOOL_FLAGS {
        let var = env_name(flag);
        if let Some(value) = env(&var) {
            let on = parse_bool(&value).ok_or_else(|| {
                ConfigError(format!(
                    "{var}: expected 1, true, 0 or false, got {value:?}"
                ))
            })?;
            *bool_setting(&mut config, flag) = on;
        }
    }
    if let Some(value) = env("WSCHAT_PORT") {
        config.port = parse_port(&value, "WSCHAT_PORT")?;
    }

    // A token flag replaces a token variable; two flags (or two variables)
    // are an error.
    let mut admin_token_from_env = config.admin_token.is_some();
    let mut origins_from_flags: Vec<String> = Vec::new();
    let mut proxies_from_flags: Vec<TrustedProxy> = Vec::new();
    let mut port_seen = false;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ if BOOL_FLAGS.contains(&arg.as_str()) => *bool_setting(&mut config, &arg) = true,
            _ if arg.starts_with("--") => {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) => (f.to_string(), Some(v.to_string())),
                    None => (arg.clone(), None),
                };
                if !VALUE_FLAGS.contains(&flag.as_str()) {
                    return Err(ConfigError(format!(
                        "unknown option {flag} (see wschat --help)"
                    )));
                }
                let value = match inline.or_else(|| args.next()) {
                    Some(v) => v,
                    None => return Err(ConfigError(format!("{flag} needs a value"))),
                };
                if flag == "--allowed-origin" {
                    origins_from_flags.push(value.trim().to_ascii_lowercase());
                } else if flag == "--trusted-proxy" {
                    proxies_from_flags.push(trusted_proxy(&value, &flag)?);
                } else {
                    if flag.starts_with("--admin-token") && admin_token_from_env {
                        config.admin_token = None;
                        admin_token_from_env = false;
                    }
                    apply(&mut config, &flag, &value, &flag)?;
                }
            }
            _ if !port_seen && !arg.starts_with('-') => {
                config.port = parse_port(&arg, "PORT")?;
                port_seen = true;
            }
            _ => {
                return Err(ConfigError(format!(
                    "unexpected argument {arg:?} (see wschat --help)"
                )));
            }
        }
    }
    if !origins_from_flags.is_empty() {
        config.allowed_origins = origins_from_flags;
    }
    if !proxies_from_flags.is_empty() {
        config.trusted_proxies = proxies_from_flags;
    }
    check_combinations(&config)?;
    Ok(Command::Run(Box::new(config)))
}

fn bool_setting<'c>(config: &'c mut Config, flag: &str) -> &'c mut bool {
    match flag {
        "--console" => &mut config.console,
        "--reuse-port" => &mut config.reuse_port,
        _ => &mut config.echo,
    }
}

/// Rules that involve more than one setting.
fn check_combinations(config: &Config) -> Result<(), ConfigError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(_), None) => Err(ConfigError(
            "--tls-cert needs --tls-key (WSCHAT_TLS_KEY) as well".to_string(),
        )),
        (None, Some(_)) => Err(ConfigError(
            "--tls-key needs --tls-cert (WSCHAT_TLS_CERT) as well".to_string(),
        )),
        _ => Ok(()),
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn parse_port(value: &str, what: &str) -> Result<u16, ConfigError> {
    value.trim().parse::<u16>().map_err(|_| {
        ConfigError(format!(
            "{what}: expected a port number 0-65535, got {value:?}"
        ))
    })
}

fn parse_number(value: &str, what: &str) -> Result<u64, ConfigError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError(format!(
            "{what}: expected a non-negative integer, got {value:?}"
        )));
    }
    v.parse::<u64>()
        .map_err(|_| ConfigError(format!("{what}: number too large: {value:?}")))
}

fn to_usize(n: u64, what: &str) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| ConfigError(format!("{what}: number too large: {n}")))
}

fn apply(config: &mut Config, flag: &str, value: &str, what: &str) -> Result<(), ConfigError> {
    match flag {
        "--host" => {
            let host = value.trim();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.eq_ignore_ascii_case("localhost") {
                config.host = "127.0.0.1".to_string();
            } else if host.parse::<std::net::IpAddr>().is_ok() {
                config.host = host.to_string();
            } else {
                return Err(ConfigError(format!(
                    "{what}: expected an IP address such as 127.0.0.1, 0.0.0.0 or ::, got {value:?}"
                )));
            }
        }
        "--max-message-bytes" => {
            config.max_message_bytes = to_usize(parse_number(value, what)?, what)?
        }
        "--max-chat-chars" => config.max_chat_chars = to_usize(parse_number(value, what)?, what)?,
        "--rate-limit" => {
            config.rate_limit = u32::try_from(parse_number(value, what)?)
                .map_err(|_| ConfigError(format!("{what}: number too large: {value:?}")))?
        }
        "--max-connections" => config.max_connections = to_usize(parse_number(value, what)?, what)?,
        "--max-output-bytes" => {
            config.max_output_bytes = to_usize(parse_number(value, what)?, what)?
        }
        "--max-total-output-bytes" => {
            config.max_total_output_bytes = to_usize(parse_number(value, what)?, what)?
        }
        "--handshake-timeout" => {
            config.handshake_timeout = seconds(parse_number(value, what)?, what)?
        }
        "--idle-timeout" => config.idle_timeout = seconds(parse_number(value, what)?, what)?,
        "--close-timeout" => config.close_timeout = seconds(parse_number(value, what)?, what)?,
        "--shutdown-timeout" => {
            config.shutdown_timeout = seconds(parse_number(value, what)?, what)?
        }
        "--history" => {
            let n = to_usize(parse_number(value, what)?, what)?;
            if n > MAX_HISTORY {
                return Err(ConfigError(format!(
                    "{what}: at most {MAX_HISTORY} messages, got {n}"
                )));
            }
            config.history = n;
        }
        "--tls-cert" => config.tls_cert = Some(non_empty_path(value, what)?),
        "--tls-key" => config.tls_key = Some(non_empty_path(value, what)?),
        "--admin-token" => set_admin_token(config, value.to_string(), what)?,
        "--admin-token-file" => {
            let path = non_empty_path(value, what)?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError(format!("{what}: cannot read {}: {e}", path.display())))?;
            set_admin_token(config, text.trim().to_string(), what)?;
        }
        "--redis" => {
            check_redis_url(value).map_err(|why| ConfigError(format!("{what}: {why}")))?;
            config.redis = Some(value.to_string());
        }
        "--cluster-name" => {
            let name = value.trim();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !ok {
                return Err(ConfigError(format!(
                    "{what}: 1 to 64 characters from A-Z a-z 0-9 - _ . :, got {value:?}"
                )));
            }
            config.cluster_name = name.to_string();
        }
        "--node-timeout" => {
            let n = parse_number(value, what)?;
            if n == 0 {
                return Err(ConfigError(format!("{what}: must be at least 1 second")));
            }
            config.node_timeout = seconds(n, what)?;
        }
        _ => return Err(ConfigError(format!("unknown option {flag}"))),
    }
    Ok(())
}

fn trusted_proxy(value: &str, what: &str) -> Result<TrustedProxy, ConfigError> {
    parse_trusted_proxy(value).map_err(|why| ConfigError(format!("{what}: {why}")))
}

fn non_empty_path(value: &str, what: &str) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError(format!("{what}: expected a file name")));
    }
    Ok(PathBuf::from(value))
}

/// Section 11: one token, 16 to 256 printable ASCII characters, no spaces;
/// the token itself never appears in an error.
fn set_admin_token(config: &mut Config, token: String, what: &str) -> Result<(), ConfigError> {
    if config.admin_token.is_some() {
        return Err(ConfigError(format!(
            "{what}: give --admin-token or --admin-token-file, not both"
        )));
    }
    let printable = token.bytes().all(|b| b.is_ascii_graphic());
    if !(16..=256).contains(&token.len()) || !printable {
        return Err(ConfigError(format!(
            "{what}: a token is 16 to 256 printable ASCII characters without spaces"
        )));
    }
    config.admin_token = Some(token);
    Ok(())
}

/// `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, nothing else (section 12).
fn check_redis_url(value: &str) -> Result<(), &'static str> {
    let rest = value
        .strip_prefix("redis://")
        .ok_or("expected a redis://HOST[:PORT][/DB] URL")?;
    let (authority, db) = match rest.split_once('/') {
        Some((a, db)) => (a, Some(db)),
        None => (rest, None),
    };
    if let Some(db) = db
        && !db.is_empty()
        && db.parse::<u32>().is_err()
    {
        return Err("the database after / must be a number");
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected a host name or address");
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return Err("the port must be a number 1-65535");
    }
    Ok(())
}

fn seconds(n: u64, what: &str) -> Result<Duration, ConfigError> {
    // A century is plenty; larger values would overflow Instant arithmetic.
    if n > 100 * 365 * 24 * 3600 {
        return Err(ConfigError(format!("{what}: too many seconds: {n}")));
    }
    Ok(Duration::from_secs(n))
}

#[cfg(test)]
mod tests;
