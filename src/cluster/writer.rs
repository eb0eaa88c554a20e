//! The writer thread: owns the connection that changes Redis. It publishes
//! the loop's proposals in order (pipelined, one `PROPOSE` script each),
//! holds them while Redis is away, keeps this node's lease alive, frees the
//! names of nodes whose lease lapsed, and after a reconnect registers this
//! node's names again before it serves.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use redis::{Script, Value};

use super::reader::{text, values};
use super::scripts::{self, STREAM_MAXLEN};
use super::{Notice, Proposal, Reject, Shared, backoff, random_hex};

/// Proposals sent in one pipeline (one round trip).
const BATCH: usize = 256;
/// Names per `RECLAIM` call, to keep each script run short.
const RECLAIM_CHUNK: usize = 500;

pub(super) enum Command {
    Propose(Proposal),
    /// The reader lost Redis (or saw it lose its data): check the writer's
    /// own connection now rather than at the next heartbeat, so the node is
    /// not reported connected before its names are registered again.
    Check,
    Shutdown {
        leaves: Vec<Proposal>,
        deadline: Instant,
        done: mpsc::Sender<()>,
    },
}

/// A name this node holds, as registered in Redis.
struct Owned {
    value: String,
    owner: String,
    conn: u64,
    name: String,
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    client: redis::Client,
    rx: mpsc::Receiver<Command>,
    con: Option<redis::Connection>,
    epoch: String,
    /// The names this node holds: what it registers again after a reconnect.
    owned: HashMap<String, Owned>,
    /// Proposals not yet acknowledged by Redis, oldest first, with their
    /// sequence number (so a replay after a lost reply is recognised).
    pending: VecDeque<(u64, Proposal)>,
    next_seq: u64,
    propose: Script,
    reclaim: Script,
    reap: Script,
    next_tick: Instant,
    shutdown: Option<(Instant, mpsc::Sender<()>)>,
    /// The channel closed: the link was dropped without `shutdown`.
    orphaned: bool,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        client: redis::Client,
        rx: mpsc::Receiver<Command>,
    ) -> Writer {
        Writer {
            shared,
            client,
            rx,
            con: None,
            epoch: String::new(),
            owned: HashMap::new(),
            pending: VecDeque::new(),
            next_seq: 1,
            propose: Script::new(scripts::PROPOSE),
            reclaim: Script::new(scripts::RECLAIM),
            reap: Script::new(scripts::REAP),
            next_tick: Instant::now(),
            shutdown: None,
            orphaned: false,
        }
    }

    /// Heartbeat and reaping period: a quarter of the node timeout, so a dead
    /// node's lease (half the timeout) lapses and is reaped within 3/4 of it.
    fn tick(&self) -> Duration {
        (self.shared.node_timeout / 4).max(Duration::from_millis(50))
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from((self.shared.node_timeout / 2).as_millis())
            .unwrap_or(u64::MAX)
            .max(100)
    }

    pub(super) fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            if self.orphaned || (self.shared.stopping() && self.shutdown.is_none()) {
                // Dropped without shutdown: go silent like a dead node.
                break;
            }
            if let Some((deadline, _)) = &self.shutdown
                && Instant::now() >= *deadline
            {
                break;
            }
            if self.con.is_none() {
                match self.connect() {
                    Ok(()) => attempt = 0,
                    Err(e) => {
                        self.lose(&e);
                        let wait = backoff(attempt);
                        attempt = attempt.saturating_add(1);
                        self.receive(wait);
                        continue;
                    }
                }
            }
            if let Err(e) = self.serve() {
                self.lose(&e);
                continue;
            }
            if self.shutdown.is_some() && self.pending.is_empty() {
                if let Err(e) = self.leave_cluster() {
                    self.lose(&e);
                    continue;
                }
                break;
            }
            let wait = self.next_tick.saturating_duration_since(Instant::now());
            // While the reader is not there yet, proposals wait for it; poll.
            let wait = if !self.pending.is_empty() {
                wait.min(Duration::from_millis(20))
            } else {
                wait
            };
            self.receive(wait);
        }
        if let Some((_, done)) = self.shutdown.take() {
            let _ = done.send(());
        }
        self.shared.set_health(Some(false), None);
    }

    fn lose(&mut self, e: &redis::RedisError) {
        if self.con.take().is_some() {
            log::warn!("cluster writer: {e}");
        } else {
            log::debug!("cluster writer: {e}");
        }
        self.shared.set_health(Some(false), None);
    }

    /// Waits up to `wait` for commands, then takes all that are queued.
    fn receive(&mut self, wait: Duration) {
        let first = match self.rx.recv_timeout(wait) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                self.orphaned = self.shutdown.is_none();
                return;
            }
        };
        self.take(first);
        while let Ok(c) = self.rx.try_recv() {
            self.take(c);
        }
    }

    fn take(&mut self, c: Command) {
        match c {
            Command::Propose(p) => self.enqueue(p),
            Command::Check => self.next_tick = Instant::now(),
            Command::Shutdown {
                leaves,
                deadline,
                done,
            } => {
                for p in leaves {
                    self.enqueue(p);
                }
                self.shutdown = Some((deadline, done));
            }
        }
    }

    fn enqueue(&mut self, p: Proposal) {
        self.pending.push_back((self.next_seq, p));
        self.next_seq = self.next_seq.saturating_add(1);
    }

    /// A fresh connection: scripts loaded, epoch known, lease taken, names
    /// registered again, dead nodes reaped. Only then is the writer healthy.
    fn connect(&mut self) -> redis::RedisResult<()> {
        let mut con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(1))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))?;
        con.set_write_timeout(Some(Duration::from_secs(2)))?;
        for s in [&self.propose, &self.reclaim, &self.reap] {
            s.prepare_invoke().load(&mut con)?;
        }
        self.con = Some(con);
        self.resync()?;
        self.shared.set_health(Some(true), None);
        Ok(())
    }

    /// Learns the epoch and registers this node's names again; a name that
    /// another node took meanwhile is lost (PROTOCOL 12.6).
    fn resync(&mut self) -> redis::RedisResult<()> {
        let keys = self.shared.keys.clone();
        let con = self.con.as_mut().ok_or_else(not_connected)?;
        let epoch: String = Script::new(scripts::EPOCH)
            .key(&keys.epoch)
            .arg(random_hex())
            .invoke(con)?;
        if epoch != self.epoch && !self.epoch.is_empty() {
            log::warn!("cluster: redis has a new epoch {epoch}; registering names again");
        }
        self.epoch = epoch;
        // Take the lease before claiming, so a reaper cannot free the names
        // just registered.
        self.heartbeat()?;
        let con = self.con.as_mut().ok_or_else(not_connected)?;
        let all: Vec<(&String, &Owned)> = self.owned.iter().collect();
        let mut lost = Vec::new();
        for chunk in all.chunks(RECLAIM_CHUNK) {
            let mut inv = self.reclaim.prepare_invoke();
            inv.key(&keys.epoch).key(&keys.names).key(&keys.events);
            inv.arg(&self.epoch).arg(STREAM_MAXLEN);
            for (k, o) in chunk {
                inv.arg(k.as_str()).arg(&o.value).arg(&o.owner);
            }
            let reply: Value = inv.invoke(con)?;
            let mut parts = values(reply).into_iter();
            if parts.next().and_then(text).as_deref() != Some("ok") {
                return Err(protocol_error("reclaim: epoch changed"));
            }
            lost.extend(
                parts
                    .next()
                    .map(values)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(text),
            );
        }
        let mut notices = Vec::new();
        for k in lost {
            if let Some(o) = self.owned.remove(&k) {
                log::info!(
                    "cluster: name {:?} was taken elsewhere while redis was away",
                    o.name
                );
                notices.push(Notice::NameLost {
                    conn: o.conn,
                    name: o.name,
                });
            }
        }
        self.shared.notify(notices);
        Ok(())
    }

    /// Refreshes the lease, then frees the names of nodes whose lease lapsed.
    /// A periodic heartbeat also checks the epoch, so data lost without a
    /// disconnection (`FLUSHALL`) is repaired within one tick even when this
    /// node proposes nothing.
    fn heartbeat(&mut self) -> redis::RedisResult<()> {
        let keys = self.shared.keys.clone();
        let node = &self.shared.node;
        let lease_ms = self.lease_ms();
        let con = self.con.as_mut().ok_or_else(not_connected)?;
        let (epoch,): (Option<String>,) = redis::pipe()
            .cmd("GET")
            .arg(&keys.epoch)
            .cmd("SET")
            .arg(keys.lease(node))
            .arg(&self.epoch)
            .arg("PX")
            .arg(lease_ms)
            .ignore()
            .cmd("SADD")
            .arg(&keys.nodes)
            .arg(node)
            .ignore()
            .query(con)?;
        if epoch.as_deref() != Some(self.epoch.as_str()) {
            // resync takes the lease and calls this again with the epoch
            // it just read or set.
            return self.resync();
        }
        let con = self.con.as_mut().ok_or_else(not_connected)?;
        let alive = reap(&self.reap, &keys, con)?;
        let before = self.shared.nodes_alive.swap(alive, Ordering::Relaxed);
        if before != alive {
            self.shared.notify([Notice::NodesAlive(alive)]);
        }
        self.next_tick = Instant::now() + self.tick();
        Ok(())
    }

    /// One turn while connected: heartbeat when due, then publish what is
    /// pending (once the reader follows the stream, so nothing this node
    /// publishes can fall before the reader's starting point).
    fn serve(&mut self) -> redis::RedisResult<()> {
        if Instant::now() >= self.next_tick {
            self.heartbeat()?;
        }
        // On the way out this node's own view no longer matters.
        if !self.shared.reader_ok.load(Ordering::SeqCst) && self.shutdown.is_none() {
            return Ok(());
        }
        while !self.pending.is_empty() {
            self.publish_batch()?;
        }
        Ok(())
    }

    fn publish_batch(&mut self) -> redis::RedisResult<()> {
        let keys = &self.shared.keys;
        let n = self.pending.len().min(BATCH);
        let mut pipe = redis::pipe();
        let hist_len = self.shared.history_len.to_string();
        for (seq, p) in self.pending.iter().take(n) {
            let (ck, cv, co) = match &p.claim {
                Some(c) => {
                    let owner = self.shared.owner(c.conn);
                    (
                        c.key.as_str(),
                        format!("{owner}|{}|{}", c.color, c.name),
                        owner,
                    )
                }
                None => ("", String::new(), String::new()),
            };
            let (rk, ro) = match &p.release {
                Some(r) => (r.key.as_str(), self.shared.owner(r.conn)),
                None => ("", String::new()),
            };
            let history = p.history && self.shared.history_len > 0;
            pipe.cmd("EVALSHA")
                .arg(self.propose.get_hash())
                .arg(5)
                .arg(&keys.epoch)
                .arg(&keys.names)
                .arg(&keys.events)
                .arg(&keys.history)
                .arg(&keys.seqs)
                .arg(&self.epoch)
                .arg(&self.shared.node)
                .arg(*seq)
                .arg(co)
                .arg(ck)
                .arg(cv)
                .arg(rk)
                .arg(ro)
                .arg(&p.event)
                .arg(if history { "1" } else { "0" })
                .arg(&hist_len)
                .arg(STREAM_MAXLEN)
                .arg(p.ticket);
        }
        let con = self.con.as_mut().ok_or_else(not_connected)?;
        let replies: Vec<Value> = pipe.query(con)?;
        let mut notices = Vec::new();
        for reply in replies {
            let status = values(reply).into_iter().next().and_then(text);
            match status.as_deref() {
                Some("epoch") => {
                    // Redis lost its data under us: register names again,
                    // then retry from this proposal.
                    self.shared.notify(notices);
                    return self.resync();
                }
                Some("ok") | Some("dup") => {
                    if let Some((_, p)) = self.pending.pop_front() {
                        if status.as_deref() == Some("ok") {
                            self.shared.published.fetch_add(1, Ordering::Relaxed);
                        }
                        self.record(&p);
                    }
                }
                Some("taken") => {
                    if let Some((_, p)) = self.pending.pop_front() {
                        notices.push(Notice::Rejected {
                            ticket: p.ticket,
                            reason: Reject::NameTaken,
                        });
                    }
                }
                other => {
                    // Never expected; dropping it keeps the queue moving.
                    log::error!("cluster: unexpected propose reply {other:?}");
                    self.pending.pop_front();
                }
            }
        }
        self.shared.notify(notices);
        Ok(())
    }

    /// Mirrors in `owned` what the script just did to this node's names.
    fn record(&mut self, p: &Proposal) {
        let claim_key = p.claim.as_ref().map(|c| c.key.as_str());
        if let Some(r) = &p.release
            && Some(r.key.as_str()) != claim_key
            && self.owned.get(&r.key).is_some_and(|o| o.conn == r.conn)
        {
            self.owned.remove(&r.key);
        }
        if let Some(c) = &p.claim {
            let owner = self.shared.owner(c.conn);
            self.owned.insert(
                c.key.clone(),
                Owned {
                    value: format!("{owner}|{}|{}", c.color, c.name),
                    owner,
                    conn: c.conn,
                    name: c.name.clone(),
                },
            );
        }
    }

    /// Orderly exit: drop the lease and reap ourselves, which frees any name
    /// still held (the others see `free` records) and leaves the node set.
    fn leave_cluster(&mut self) -> redis::RedisResult<()> {
        let keys = &self.shared.keys;
        let con = self.con.as_mut().ok_or_else(not_connected)?;
        redis::cmd("DEL")
            .arg(keys.lease(&self.shared.node))
            .query::<()>(con)?;
        reap(&self.reap, keys, con)?;
        self.owned.clear();
        Ok(())
    }
}

/// Runs the reaping script (dead nodes' names freed, with their leaves);
/// returns how many nodes are alive.
fn reap(
    script: &Script,
    keys: &scripts::Keys,
    con: &mut redis::Connection,
) -> redis::RedisResult<usize> {
    script
        .key(&keys.nodes)
        .key(&keys.names)
        .key(&keys.events)
        .key(&keys.epoch)
        .arg(&keys.lease_prefix)
        .arg(STREAM_MAXLEN)
        .invoke(con)
}

fn not_connected() -> redis::RedisError {
    protocol_error("not connected")
}

fn protocol_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}
