//! `wschat-bench`: a lean load generator for wschat. One thread, one `mio`
//! poll loop, non-blocking sockets, and its own client side of RFC 6455
//! (handshake with `Sec-WebSocket-Accept` verification, masked frames).
//!
//! - [`args`]: the command line.
//! - [`ws`]: handshake and frame codec (client side).
//! - [`conn`]: one connection's state machine and buffers.
//! - [`fanout`], [`connect`], [`echo`]: the three modes.
//! - [`tls`]: the client config for `--tls` (wss).
//! - [`stats`]: the latency histogram; [`sys`]: `/proc`, limits, source
//!   addresses; [`report`]: result rows, printed and appended as CSV.
//!
//! Run `wschat-bench --help`; `scripts/bench.sh` drives a standard matrix.

mod args;
mod conn;
mod connect;
mod echo;
mod fanout;
mod report;
mod stats;
mod sys;
mod tls;
mod ws;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let o = match args::parse(&argv) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wschat-bench: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    sys::raise_fd_limit();
    let result = match o.mode {
        args::Mode::Fanout if o.ramp => fanout::ramp(&o),
        args::Mode::Fanout => fanout::run(&o),
        args::Mode::Connect => connect::run(&o),
        args::Mode::Echo => echo::run(&o),
    };
    match result {
        Ok(rows) => {
            if let Some(path) = &o.csv
                && let Err(e) = report::append_csv(path, &rows)
            {
                eprintln!("wschat-bench: writing {}: {e}", path.display());
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wschat-bench: {e}");
            if let Some(path) = &o.csv {
                // A failed run still leaves a row, so a matrix shows the hole.
                let mut row = report::Row::new(&o.label, mode_name(o.mode), "error");
                row.set("clients", o.clients);
                row.set("verdict", format!("error: {e}"));
                let _ = report::append_csv(path, &[row]);
            }
            ExitCode::from(1)
        }
    }
}

fn mode_name(m: args::Mode) -> &'static str {
    match m {
        args::Mode::Fanout => "fanout",
        args::Mode::Connect => "connect",
        args::Mode::Echo => "echo",
    }
}
