//! `--console`: lines typed on standard input become announcements
//! (PROTOCOL section 11), read without ever blocking the poll loop.
//!
//! Standard input may be a terminal or a pipe, neither of which can be made
//! non-blocking without touching a descriptor the whole process shares, so
//! one thread does the blocking reads. It sends each accepted line through
//! a channel and wakes the loop with a [`mio::Waker`]; the loop drains
//! [`Console::try_recv`] when the waker's token fires and publishes each
//! [`ConsoleEvent::Line`] as `POST /api/publish` would. At end of input the
//! thread sends [`ConsoleEvent::Eof`] and ends; the server goes on.
//!
//! The thread is never joined: at shutdown it may be blocked in `read`, and
//! the process exits around it.

use mio::Waker;
use std::io::{self, BufRead, BufReader, Write};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

/// Bytes of surrounding whitespace tolerated around a line of the maximum
/// length; a longer line is refused without being held in memory.
const WHITESPACE_SLACK: usize = 64 * 1024;

/// What the console thread tells the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// A trimmed, non-empty line of 1 to `--max-chat-chars` characters.
    Line(String),
    /// Standard input ended (or failed): the console has stopped.
    Eof,
}

/// The loop's end of the console.
#[derive(Debug)]
pub struct Console {
    rx: Receiver<ConsoleEvent>,
}

impl Console {
    /// Reads the process's standard input.
    pub fn stdin(max_chat_chars: usize, waker: Arc<Waker>) -> io::Result<Console> {
        Console::spawn(
            BufReader::new(io::stdin()),
            io::stderr(),
            max_chat_chars,
            waker,
        )
    }

    /// Reads `input` on a new thread; refusals go to `errors` as one line
    /// each (standard error for the real console).
    pub fn spawn<R, W>(
        input: R,
        errors: W,
        max_chat_chars: usize,
        waker: Arc<Waker>,
    ) -> io::Result<Console>
    where
        R: BufRead + Send + 'static,
        W: Write + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("wschat-console".into())
            .spawn(move || {
                run(input, errors, max_chat_chars, |event| {
                    // The loop is gone (shutting down): stop reading.
                    tx.send(event).is_ok() && waker.wake().is_ok()
                })
            })?;
        Ok(Console { rx })
    }

    /// The next event, if one is waiting. Call it until `None` each time
    /// the waker fires (one wake may stand for several lines).
    pub fn try_recv(&self) -> Option<ConsoleEvent> {
        match self.rx.try_recv() {
            Ok(event) => Some(event),
            // A thread that ended without its Eof (it cannot, short of a
            // panic) reads as end of input too.
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => None,
        }
    }
}

/// The thread's body: reads lines until end of input, hands accepted ones
/// to `deliver`, which returns false when nobody listens any more.
fn run<R: BufRead, W: Write>(
    mut input: R,
    mut errors: W,
    max_chat_chars: usize,
    mut deliver: impl FnMut(ConsoleEvent) -> bool,
) {
    let cap = max_chat_chars
        .saturating_mul(4)
        .saturating_add(WHITESPACE_SLACK);
    let mut line = Vec::new();
    loop {
        let (ended, overflow) = match read_line(&mut input, &mut line, cap) {
            Ok(read) => read,
            Err(e) => {
                let _ = writeln!(errors, "wschat: console: cannot read standard input: {e}");
                (true, false)
            }
        };
        let refusal = if overflow {
            Some(format!(
                "wschat: console: line over {max_chat_chars} characters refused"
            ))
        } else {
            match std::str::from_utf8(&line) {
                Err(_) => Some("wschat: console: line is not UTF-8, refused".to_string()),
                Ok(text) => {
                    let text = text.trim();
                    let chars = text.chars().count();
                    if chars > max_chat_chars {
                        Some(format!(
                            "wschat: console: line over {max_chat_chars} characters refused"
                        ))
                    } else {
                        if chars > 0 && !deliver(ConsoleEvent::Line(text.to_string())) {
                            return;
                        }
                        None
                    }
                }
            }
        };
        if let Some(refusal) = refusal {
            let _ = writeln!(errors, "{refusal}");
            let _ = errors.flush();
        }
        line.clear();
        if ended {
            deliver(ConsoleEvent::Eof);
            return;
        }
    }
}

/// Reads one line (without its `\n`) into `line`, keeping at most `cap`
/// bytes; the rest of a longer line is read and dropped. Returns
/// `(end_of_input, over_cap)`.
fn read_line<R: BufRead>(
    input: &mut R,
    line: &mut Vec<u8>,
    cap: usize,
) -> io::Result<(bool, bool)> {
    let mut overflow = false;
    loop {
        let available = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((true, overflow));
        }
        let (part, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), i + 1, true),
            None => (available, available.len(), false),
        };
        if !overflow {
            if line.len().saturating_add(part.len()) > cap {
                overflow = true;
                line.clear();
            } else {
                line.extend_from_slice(part);
            }
        }
        input.consume(used);
        if done {
            return Ok((false, overflow));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};
    use std::io::Read;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A writer the test can read after the thread wrote to it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const WAKE: Token = Token(7);

    /// Runs the console over `input` the way the loop would: poll for the
    /// waker, drain, until Eof (bounded in time).
    fn drive<R: BufRead + Send + 'static>(input: R, max: usize) -> (Vec<ConsoleEvent>, String) {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
        let errors = Shared::default();
        let console = Console::spawn(input, errors.clone(), max, waker).unwrap();
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.last() != Some(&ConsoleEvent::Eof) {
            assert!(Instant::now() < deadline, "no Eof within 10 s: {got:?}");
            poll.poll(&mut events, Some(Duration::from_millis(500)))
                .unwrap();
            for event in &events {
                assert_eq!(event.token(), WAKE);
            }
            while let Some(event) = console.try_recv() {
                got.push(event);
            }
        }
        let errors = String::from_utf8(errors.0.lock().unwrap().clone()).unwrap();
        (got, errors)
    }

    fn lines(texts: &[&str]) -> Vec<ConsoleEvent> {
        let mut v: Vec<ConsoleEvent> = texts
            .iter()
            .map(|t| ConsoleEvent::Line(t.to_string()))
            .collect();
        v.push(ConsoleEvent::Eof);
        v
    }

    #[test]
    fn lines_are_trimmed_and_empty_ones_skipped() {
        let input =
            "hello\n\n   \n  Maintenance at 18:00 \r\n\tünïcode\tline\nlast without newline";
        let (got, errors) = drive(io::Cursor::new(input.to_string()), 100);
        assert_eq!(
            got,
            lines(&[
                "hello",
                "Maintenance at 18:00",
                "ünïcode\tline",
                "last without newline"
            ])
        );
        assert_eq!(errors, "");
    }

    #[test]
    fn over_long_and_invalid_lines_are_refused_with_one_line_each() {
        let mut input = Vec::new();
        input.extend_from_slice("ok\n".as_bytes());
        input.extend_from_slice("é".repeat(11).as_bytes());
        input.push(b'\n');
        input.extend_from_slice(format!("  {}  \n", "é".repeat(10)).as_bytes());
        input.extend_from_slice(b"bad \xff byte\n");
        // Far over the in-memory cap: dropped while reading.
        input.extend_from_slice(&vec![b'x'; 200_000]);
        input.extend_from_slice(b"\nafter\n");
        let (got, errors) = drive(io::Cursor::new(input), 10);
        let ten = "é".repeat(10);
        assert_eq!(got, lines(&["ok", &ten, "after"]));
        let refusals: Vec<&str> = errors.lines().collect();
        assert_eq!(
            refusals,
            [
                "wschat: console: line over 10 characters refused",
                "wschat: console: line is not UTF-8, refused",
                "wschat: console: line over 10 characters refused",
            ]
        );
    }

    #[test]
    fn lines_from_a_real_pipe_then_eof() {
        let (reader, mut writer) = io::pipe().unwrap();
        let writer_thread = thread::spawn(move || {
            writer.write_all(b"first\n").unwrap();
            thread::sleep(Duration::from_millis(50));
            writer.write_all(b"sec").unwrap();
            thread::sleep(Duration::from_millis(50));
            writer.write_all(b"ond\n").unwrap();
            // Dropping the writer is end of input.
        });
        let (got, errors) = drive(BufReader::new(reader), 50);
        writer_thread.join().unwrap();
        assert_eq!(got, lines(&["first", "second"]));
        assert_eq!(errors, "");
    }

    #[test]
    fn read_errors_end_the_console() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let (got, errors) = drive(BufReader::new(Failing), 10);
        assert_eq!(got, [ConsoleEvent::Eof]);
        assert!(
            errors.contains("cannot read standard input: boom"),
            "{errors}"
        );
    }

    #[test]
    fn the_thread_stops_when_the_loop_is_gone() {
        let mut delivered = 0;
        run(io::Cursor::new("a\nb\nc\n"), io::sink(), 10, |_| {
            delivered += 1;
            false
        });
        assert_eq!(delivered, 1);
    }
}
