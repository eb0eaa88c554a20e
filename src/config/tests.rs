//! Unit tests of the parent module.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn run(args: &[&str]) -> Result<Config, ConfigError> {
    match parse(args.iter().copied(), no_env)? {
        Command::Run(c) => Ok(*c),
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
fn v2_flags() {
    let c = run(&[
        "--history",
        "0",
        "--console",
        "--reuse-port",
        "--redis",
        "redis://:secret@127.0.0.1:6380/2",
        "--cluster-name",
        "blue",
        "--node-timeout",
        "3",
        "--admin-token",
        "0123456789abcdef",
    ])
    .unwrap();
    assert_eq!(c.history, 0);
    assert!(c.console && c.reuse_port);
    assert_eq!(c.redis.as_deref(), Some("redis://:secret@127.0.0.1:6380/2"));
    assert_eq!(c.cluster_name, "blue");
    assert_eq!(c.node_timeout, Duration::from_secs(3));
    assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
    let d = run(&[]).unwrap();
    assert_eq!((d.history, d.node_timeout.as_secs()), (100, 10));
    assert_eq!(d.cluster_name, "wschat");
    assert_eq!(run(&["--history", "1000"]).unwrap().history, 1000);
    for (args, names) in [
        (vec!["--history", "1001"], "--history"),
        (vec!["--redis", ""], "--redis"),
        (vec!["--redis", "rediss://h"], "--redis"),
        (vec!["--redis", "http://h"], "--redis"),
        (vec!["--redis", "redis://h:notaport"], "--redis"),
        (vec!["--redis", "redis://"], "--redis"),
        (vec!["--node-timeout", "0"], "--node-timeout"),
        (vec!["--cluster-name", ""], "--cluster-name"),
        (vec!["--admin-token", "short"], "--admin-token"),
        (
            vec![
                "--admin-token",
                "0123456789abcdef",
                "--admin-token",
                "0123456789abcdef",
            ],
            "--admin-token",
        ),
        (
            vec!["--admin-token", "has a space in it ok"],
            "--admin-token",
        ),
        (vec!["--tls-cert", "a.pem"], "--tls-cert"),
        (vec!["--tls-key", "a.pem"], "--tls-key"),
    ] {
        let err = run(&args).unwrap_err();
        assert!(err.0.contains(names), "{args:?}: {err}");
        assert!(!err.0.contains("0123456789abcdef"), "token leaked: {err}");
    }
    // A flag replaces a variable's token.
    let env = |k: &str| (k == "WSCHAT_ADMIN_TOKEN").then(|| "fromtheenvironment".to_string());
    let Command::Run(c) = parse(["--admin-token", "fromthecommandline"], env).unwrap() else {
        panic!("expected Run");
    };
    assert_eq!(c.admin_token.as_deref(), Some("fromthecommandline"));
    let env = |k: &str| (k == "WSCHAT_REUSE_PORT").then(|| "1".to_string());
    let Command::Run(c) = parse(Vec::<String>::new(), env).unwrap() else {
        panic!("expected Run");
    };
    assert!(c.reuse_port);
}

#[test]
fn help_and_version() {
    assert_eq!(parse(["--help"], no_env).unwrap(), Command::Help);
    assert_eq!(parse(["-V"], no_env).unwrap(), Command::Version);
}

#[test]
fn trusted_proxies_repeat_come_from_a_list_and_name_a_bad_value() {
    let c = run(&["--trusted-proxy", "127.0.0.1", "--trusted-proxy=10.0.0.0/8"]).unwrap();
    let shown: Vec<String> = c
        .trusted_proxies
        .iter()
        .map(|p| format!("{}/{}", p.addr, p.prefix_len))
        .collect();
    assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8"]);

    let env = |k: &str| (k == "WSCHAT_TRUSTED_PROXY").then(|| "::1, 192.168.0.0/16".to_string());
    let Command::Run(c) = parse(Vec::<String>::new(), env).unwrap() else {
        panic!("expected Run");
    };
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.trusted_proxies[0].prefix_len, 128);
    // Flags replace the variable's list, as for --allowed-origin.
    let Command::Run(c) = parse(["--trusted-proxy", "10.1.2.3"], env).unwrap() else {
        panic!("expected Run");
    };
    assert_eq!(c.trusted_proxies.len(), 1);

    let err = run(&["--trusted-proxy", "10.0.0.0/33"]).unwrap_err();
    assert!(err.0.starts_with("--trusted-proxy: "), "{err}");
    let env = |k: &str| (k == "WSCHAT_TRUSTED_PROXY").then(|| "10.0.0.1,nope".to_string());
    let err = parse(Vec::<String>::new(), env).unwrap_err();
    assert!(err.0.starts_with("WSCHAT_TRUSTED_PROXY: "), "{err}");
    assert!(!err.0.contains('\n'));
}
