//! The `wschat` binary: parse the command line, start logging, run the
//! server. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use wschat::config::{self, Command};

fn main() -> ExitCode {
    let args = std::env::args().skip(1);
    let config = match config::parse(args, |name| std::env::var(name).ok()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{}", config::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("wschat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wschat: {e}");
            return ExitCode::from(2);
        }
    };
    // Before binding, like any other bad value: one line, exit 2.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => match wschat::transport::tls::TlsSettings::load(cert, key) {
            Ok(settings) => Some(settings),
            Err(e) => {
                eprintln!("wschat: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Before binding: every connection is a descriptor.
    wschat::server::raise_fd_limit();

    let mut server = match wschat::Server::bind(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!(
                "wschat: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server.start_console() {
        eprintln!("wschat: --console: cannot start reading standard input: {e}");
        return ExitCode::from(1);
    }
    if let Some(tls) = tls {
        server.use_tls(tls);
    }
    if let Err(e) = server.handle_signals() {
        eprintln!("wschat: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let addr = server.local_addr();
    // One machine-readable line on stdout: scripts and tests read the port
    // from it when they asked for port 0.
    println!("listening on {scheme}://{addr}/");
    let _ = std::io::stdout().flush();
    let hint = if addr.ip().is_unspecified() {
        format!(
            " (every interface; open {scheme}://localhost:{}/)",
            addr.port()
        )
    } else {
        String::new()
    };
    log::info!(
        "wschat {} listening on {scheme}://{addr}/{hint}, up to {} connections, {} file descriptors",
        env!("CARGO_PKG_VERSION"),
        config.max_connections,
        server.fd_capacity()
    );
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wschat: poll loop failed: {e}");
            ExitCode::from(1)
        }
    }
}
