//! Starting servers for tests: the library in a thread, or the binary.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The configuration most tests start from: loopback, a free port, short
/// timeouts, no rate limit (tests that check the rate limit set one).
pub fn config() -> wschat::Config {
    wschat::Config {
        host: "127.0.0.1".into(),
        port: 0,
        rate_limit: 0,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(1),
        ..wschat::Config::default()
    }
}

/// A library server running in a background thread; shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: wschat::ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    /// Starts a server with [`config`] as changed by `change`.
    pub fn with(change: impl FnOnce(&mut wschat::Config)) -> TestServer {
        let mut config = config();
        change(&mut config);
        TestServer::start(config)
    }

    /// Starts a server with the test defaults.
    pub fn new() -> TestServer {
        TestServer::with(|_| {})
    }

    pub fn start(config: wschat::Config) -> TestServer {
        let server = wschat::Server::bind(config).expect("bind test server");
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback(), "test server bound to {addr}");
        assert_ne!(addr.port(), 0, "port 0 must be replaced by the bound port");
        let handle = server.shutdown_handle();
        let join = thread::spawn(move || server.run());
        TestServer {
            addr,
            handle,
            join: Some(join),
        }
    }

    /// Graceful shutdown (as SIGTERM); returns `run`'s result if it ended
    /// within `within`, `None` if it did not.
    pub fn shutdown(&mut self, within: Duration) -> Option<io::Result<()>> {
        self.handle.shutdown();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.join.as_ref().is_some_and(|j| j.is_finished()) {
                let join = self.join.take().unwrap();
                return Some(join.join().expect("server thread panicked"));
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// A handle for calling shutdown from elsewhere.
    pub fn handle(&self) -> wschat::ShutdownHandle {
        self.handle.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.join.is_some() {
            // Never hang a test on a broken server: wait a bounded time, then
            // leave the thread behind.
            let _ = self.shutdown(Duration::from_secs(3));
        }
    }
}

/// The `wschat` binary running as a child process; killed on drop.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Option<ChildStderr>,
}

/// A `Command` for the binary with a clean `WSCHAT_*` environment.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wschat"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSCHAT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

impl BinServer {
    /// Starts `cmd` (which must ask for port 0 on 127.0.0.1) and waits for
    /// its `listening on http://127.0.0.1:PORT/` line.
    pub fn start(mut cmd: Command) -> BinServer {
        cmd.stdin(Stdio::null());
        BinServer::spawn(cmd)
    }

    /// [`BinServer::start`] with standard input a pipe (for `--console`);
    /// dropping the returned end is end of input.
    pub fn start_piped(mut cmd: Command) -> (BinServer, ChildStdin) {
        cmd.stdin(Stdio::piped());
        let mut server = BinServer::spawn(cmd);
        let stdin = server.child.stdin.take().expect("piped stdin");
        (server, stdin)
    }

    fn spawn(mut cmd: Command) -> BinServer {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wschat binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the child never blocks on a full pipe.
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let line = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("wschat printed no listening line within 5 s");
            }
        };
        let port = parse_listening_line(&line).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("unexpected first stdout line {line:?}")
        });
        let stderr = child.stderr.take();
        BinServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM through the `kill` command.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the child wrote to stderr (only after it exited).
    pub fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `listening on http://127.0.0.1:PORT/` (or `https://` with TLS) → PORT.
pub fn parse_listening_line(line: &str) -> Option<u16> {
    let line = line.strip_suffix('\n')?;
    let rest = line
        .strip_prefix("listening on http://127.0.0.1:")
        .or_else(|| line.strip_prefix("listening on https://127.0.0.1:"))?;
    let port = rest.strip_suffix('/')?;
    port.parse().ok().filter(|p| *p != 0)
}

/// Runs the binary to completion (for flags that make it exit at once),
/// killing it if it runs longer than `within`.
pub fn run_to_exit(mut cmd: Command, within: Duration) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn wschat binary");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wschat did not exit within {within:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}
