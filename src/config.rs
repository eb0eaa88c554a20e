//! Server settings: the command line and `WSCHAT_*` environment variables of
//! PROTOCOL section 8, parsed by hand into a [`Config`].
//!
//! A flag wins over its variable; a bad flag, value or variable is a
//! [`ConfigError`] whose text names it (the binary prints it and exits 2).

use std::fmt;
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
        }
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Config),
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
];

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
            if *flag == "--allowed-origin" {
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
    if let Some(value) = env("WSCHAT_ECHO") {
        config.echo = parse_bool(&value).ok_or_else(|| {
            ConfigError(format!(
                "WSCHAT_ECHO: expected 1, true, 0 or false, got {value:?}"
            ))
        })?;
    }
    if let Some(value) = env("WSCHAT_PORT") {
        config.port = parse_port(&value, "WSCHAT_PORT")?;
    }

    let mut origins_from_flags: Vec<String> = Vec::new();
    let mut port_seen = false;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--echo" => config.echo = true,
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
                } else {
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
    Ok(Command::Run(config))
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
        _ => return Err(ConfigError(format!("unknown option {flag}"))),
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
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse(args.iter().copied(), no_env)? {
            Command::Run(c) => Ok(c),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_protocol_table() {
        let c = run(&[]).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.max_message_bytes, 65536);
        assert_eq!(c.max_chat_chars, 2000);
        assert_eq!(c.rate_limit, 10);
        assert_eq!(c.max_connections, 10000);
        assert_eq!(c.max_output_bytes, 1048576);
        assert_eq!(c.max_total_output_bytes, 268435456);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.close_timeout, Duration::from_secs(5));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
        assert!(!c.echo);
        assert!(c.allowed_origins.is_empty());
    }

    #[test]
    fn port_and_flags_in_both_spellings() {
        let c = run(&["8080", "--echo", "--rate-limit", "0", "--max-connections=5"]).unwrap();
        assert_eq!(c.port, 8080);
        assert!(c.echo);
        assert_eq!(c.rate_limit, 0);
        assert_eq!(c.max_connections, 5);
    }

    #[test]
    fn flag_wins_over_environment() {
        let env = |k: &str| match k {
            "WSCHAT_MAX_CONNECTIONS" => Some("7".to_string()),
            "WSCHAT_RATE_LIMIT" => Some("3".to_string()),
            "WSCHAT_ECHO" => Some("true".to_string()),
            "WSCHAT_ALLOWED_ORIGIN" => Some("https://A.example, https://b.example".to_string()),
            _ => None,
        };
        let Command::Run(c) = parse(["--max-connections", "9"], env).unwrap() else {
            panic!("expected Run");
        };
        assert_eq!(c.max_connections, 9);
        assert_eq!(c.rate_limit, 3);
        assert!(c.echo);
        assert_eq!(
            c.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn host_forms() {
        assert_eq!(run(&["--host", "::"]).unwrap().host, "::");
        assert_eq!(run(&["--host", "[::1]"]).unwrap().host, "::1");
        assert_eq!(run(&["--host", "localhost"]).unwrap().host, "127.0.0.1");
        assert_eq!(run(&["--host=127.0.0.1"]).unwrap().host, "127.0.0.1");
    }

    #[test]
    fn repeated_origin_flags_accumulate() {
        let c = run(&[
            "--allowed-origin",
            "https://X.org",
            "--allowed-origin",
            "http://y",
        ])
        .unwrap();
        assert_eq!(c.allowed_origins, vec!["https://x.org", "http://y"]);
    }

    #[test]
    fn bad_values_name_the_flag_or_variable() {
        for args in [
            vec!["--max-connections", "-1"],
            vec!["--max-connections", "ten"],
            vec!["--idle-timeout"],
            vec!["--bogus"],
            vec!["70000"],
            vec!["1", "2"],
            vec!["--host", "example.invalid"],
            vec!["--host", ""],
        ] {
            let err = run(&args).unwrap_err();
            assert!(!err.0.is_empty(), "{args:?}");
        }
        let err = run(&["--rate-limit", "x"]).unwrap_err();
        assert!(err.0.contains("--rate-limit"), "{err}");
        let env = |k: &str| (k == "WSCHAT_ECHO").then(|| "maybe".to_string());
        let err = parse(Vec::<String>::new(), env).unwrap_err();
        assert!(err.0.contains("WSCHAT_ECHO"), "{err}");
        let env = |k: &str| (k == "WSCHAT_CLOSE_TIMEOUT").then(|| "1.5".to_string());
        let err = parse(Vec::<String>::new(), env).unwrap_err();
        assert!(err.0.contains("WSCHAT_CLOSE_TIMEOUT"), "{err}");
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(["--help"], no_env).unwrap(), Command::Help);
        assert_eq!(parse(["-V"], no_env).unwrap(), Command::Version);
    }
}
