//! The cluster link: one node's connection to the Redis that orders the chat
//! events of every node (PROTOCOL section 12, design in docs/cluster.md).
//!
//! The poll loop never touches Redis. [`ClusterLink::start`] spawns two
//! threads that own the Redis connections: the writer (`writer.rs`) runs one
//! Lua script per proposal, keeps this node's lease and frees dead nodes'
//! names; the reader (`reader.rs`) follows the event stream and keeps a
//! replica of the cluster's users and history. Both talk to the loop through
//! a queue of [`Notice`]s and wake it with its `mio::Waker`; the loop's side
//! ([`ClusterLink::propose`], [`ClusterLink::poll`], the snapshots) only
//! takes short locks or sends on a channel, never waits for Redis.
//!
//! The event text is opaque here: the chat decides what an event is; this
//! module orders events, keeps names unique and remembers the history.

mod reader;
mod scripts;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use scripts::Keys;

/// A chat event the loop wants the cluster to order, with the name change
/// that must succeed for it to happen (atomically: if the claim fails,
/// nothing of the proposal takes effect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Chosen by the loop; a [`Notice::Rejected`] or this node's own
    /// [`Notice::Event`] carries it back.
    pub ticket: u64,
    /// The event, as the chat serialises it (JSON text); delivered to every
    /// node unchanged.
    pub event: String,
    /// Keep this event in the shared history (broadcast usermsg, announce).
    pub history: bool,
    /// Name to claim (or to refresh: a claim of the name the same connection
    /// already holds updates its display form and colour and always wins).
    pub claim: Option<Claim>,
    /// Name to give up (a rename's old name, or a leave); ignored unless the
    /// same connection holds it.
    pub release: Option<Release>,
}

/// A name claim. `conn` must be unique for the node's whole life (a serial
/// number, not a slab index that a new connection may reuse): ownership of a
/// name is "this node, this conn".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The name lower-cased (PROTOCOL section 5), the uniqueness key.
    pub key: String,
    /// The name as the user spelled it.
    pub name: String,
    /// Six upper-case hex digits.
    pub color: String,
    pub conn: u64,
}

/// A name given up by the connection that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The name lower-cased.
    pub key: String,
    pub conn: u64,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Another connection (of any node) holds the claimed name.
    NameTaken,
}

/// What the bridge tells the loop, in the order the loop must apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An event of the cluster's total order (this node's own included).
    /// `id` is unique across the cluster and its Redis restarts and matches
    /// `[A-Za-z0-9_-]{1,64}` (usable as the PROTOCOL section 9 message id);
    /// `ticket` is set when this node proposed it.
    Event {
        id: String,
        json: String,
        ticket: Option<u64>,
    },
    /// A name freed by the cluster because its node died or stopped without
    /// releasing it: deliver a `leave` for `name`. `conn` is set when the name
    /// was this node's (its lease lapsed while it could not reach Redis).
    Freed {
        id: String,
        name: String,
        conn: Option<u64>,
    },
    /// The proposal with this ticket did not take effect.
    Rejected { ticket: u64, reason: Reject },
    /// After Redis came back (empty), another node's claim reached it first:
    /// the connection has lost this name (PROTOCOL 12: it gets `name_taken`,
    /// a leave goes out, it stays connected unnamed).
    NameLost { conn: u64, name: String },
    /// Redis is reachable and this node's names are registered: serve.
    Connected,
    /// Redis is lost: answer `unavailable` (PROTOCOL 12.6) until `Connected`.
    Disconnected,
    /// Nodes alive (with a lease), this one included; sent when it changes.
    NodesAlive(usize),
    /// A node registered a name again after it reconnected (its lease may
    /// have lapsed meanwhile, so the others may have delivered a leave):
    /// the name is held by `node`/`conn` from this point of the order.
    Registered { holder: Holder },
    /// Redis lost its data and the stream starts again: the events of the
    /// new stream follow. Nodes that registered nothing in it for a node
    /// timeout are dead (their old leases died with the data).
    NewEpoch,
}

/// A name and who holds it, from the names hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub name: String,
    /// Six upper-case hex digits.
    pub color: String,
    /// The holding node's id (16 hex digits, see [`ClusterLink::node_id`]).
    pub node: String,
    /// The connection's serial number on that node (as in [`Claim`]).
    pub conn: u64,
}

/// A named user of the cluster, from the replica of the names hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct User {
    pub name: String,
    pub color: String,
}

/// One history entry: the event text as proposed and the id it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: String,
    pub json: String,
}

/// Counters for `/metrics` (PROTOCOL section 12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub connected: bool,
    pub nodes_alive: usize,
    pub events_published: u64,
    pub events_received: u64,
    pub reconnects: u64,
}

/// This node's handle on the cluster; owned by the loop.
pub struct ClusterLink {
    shared: Arc<Shared>,
    commands: mpsc::Sender<writer::Command>,
}

impl ClusterLink {
    /// Starts the bridge threads and returns at once; `Connected` follows
    /// when Redis answers. `url` is a `redis://` URL (validated by config);
    /// an unparsable one is reported through the log and the link simply
    /// never connects.
    pub fn start(
        url: &str,
        cluster_name: &str,
        node_timeout: Duration,
        history_len: usize,
        waker: Arc<mio::Waker>,
    ) -> ClusterLink {
        let shared = Arc::new(Shared {
            node: random_hex(),
            keys: Keys::new(cluster_name),
            history_len,
            node_timeout,
            waker,
            notices: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
            writer_ok: AtomicBool::new(false),
            reader_ok: AtomicBool::new(false),
            link: Mutex::new(LinkState::default()),
            replica: Mutex::new(Replica::default()),
            nodes_alive: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        });
        let client = redis::Client::open(url);
        if let Err(e) = &client {
            log::error!("cluster: bad redis url: {e}");
        }
        let (tx, rx) = mpsc::channel();
        if let Ok(client) = client {
            let r = reader::Reader::new(shared.clone(), client.clone(), tx.clone());
            spawn("wschat-cluster-reader", move || r.run());
            let w = writer::Writer::new(shared.clone(), client, rx);
            spawn("wschat-cluster-writer", move || w.run());
        }
        ClusterLink {
            shared,
            commands: tx,
        }
    }

    /// Queues a proposal; never blocks. While Redis is away proposals are
    /// held and published in order once it answers again.
    pub fn propose(&self, proposal: Proposal) {
        let _ = self.commands.send(writer::Command::Propose(proposal));
    }

    /// The next notice, if any. Call until `None` after the waker fired.
    pub fn poll(&self) -> Option<Notice> {
        lock(&self.shared.notices).pop_front()
    }

    /// True between `Connected` and `Disconnected`.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.link).connected
    }

    /// Every named user of the cluster, as of the last event the reader
    /// applied (it may run slightly ahead of the notices the loop polled).
    pub fn users(&self) -> Vec<User> {
        let replica = lock(&self.shared.replica);
        let mut users: Vec<User> = replica.users.values().map(|e| e.user.clone()).collect();
        users.sort();
        users
    }

    /// Every name of the cluster with its holder, like [`ClusterLink::users`]
    /// (the loop seeds its own index from it on the first `Connected`).
    pub fn holders(&self) -> Vec<Holder> {
        let replica = lock(&self.shared.replica);
        replica.users.values().map(NameEntry::holder).collect()
    }

    /// The shared history, oldest first, at most `history_len` entries.
    pub fn history(&self) -> Vec<HistoryEntry> {
        lock(&self.shared.replica).history.iter().cloned().collect()
    }

    /// This node's id in Redis (16 hex digits, random per start).
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    pub fn stats(&self) -> ClusterStats {
        let s = &self.shared;
        ClusterStats {
            connected: self.is_connected(),
            nodes_alive: s.nodes_alive.load(Ordering::Relaxed),
            events_published: s.published.load(Ordering::Relaxed),
            events_received: s.received.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Orderly stop (SIGTERM): publishes `leaves` (and anything still held),
    /// frees whatever names this node still holds (survivors see them as
    /// [`Notice::Freed`]), drops the lease, and returns when that is done or
    /// after `bound`, whichever comes first. Blocks the caller: the loop calls
    /// it once, after it stopped serving.
    pub fn shutdown(self, leaves: Vec<Proposal>, bound: Duration) {
        let (done_tx, done_rx) = mpsc::channel();
        let sent = self.commands.send(writer::Command::Shutdown {
            leaves,
            deadline: std::time::Instant::now() + bound,
            done: done_tx,
        });
        if sent.is_ok() {
            let _ = done_rx.recv_timeout(bound);
        }
        // Drop stops the reader.
    }
}

impl Drop for ClusterLink {
    /// Without `shutdown` the node just goes silent, as if it died: its
    /// lease lapses and the survivors free its names.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// State both bridge threads share with the link.
struct Shared {
    node: String,
    keys: Keys,
    history_len: usize,
    node_timeout: Duration,
    waker: Arc<mio::Waker>,
    notices: Mutex<VecDeque<Notice>>,
    stop: AtomicBool,
    writer_ok: AtomicBool,
    reader_ok: AtomicBool,
    link: Mutex<LinkState>,
    replica: Mutex<Replica>,
    nodes_alive: AtomicUsize,
    published: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
}

#[derive(Default)]
struct LinkState {
    connected: bool,
    /// Connected at least once, so the next `Connected` is a reconnect.
    ever: bool,
}

/// The reader's copy of the names hash and the history list.
#[derive(Default)]
struct Replica {
    users: HashMap<String, NameEntry>,
    history: VecDeque<HistoryEntry>,
}

/// One value of the names hash, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameEntry {
    node: String,
    conn: u64,
    user: User,
}

impl NameEntry {
    fn holder(&self) -> Holder {
        Holder {
            name: self.user.name.clone(),
            color: self.user.color.clone(),
            node: self.node.clone(),
            conn: self.conn,
        }
    }

    /// Parses `NODE:CONN|COLOR|Display name`.
    fn parse(value: &str) -> Option<NameEntry> {
        let (owner, rest) = value.split_once('|')?;
        let (color, name) = rest.split_once('|')?;
        let (node, conn) = owner.split_once(':')?;
        Some(NameEntry {
            node: node.to_string(),
            conn: conn.parse().ok()?,
            user: User {
                name: name.to_string(),
                color: color.to_string(),
            },
        })
    }
}

impl Shared {
    fn notify(&self, notices: impl IntoIterator<Item = Notice>) {
        let mut q = lock(&self.notices);
        let before = q.len();
        q.extend(notices);
        let added = q.len() > before;
        drop(q);
        if added {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::warn!("cluster: waking the loop failed: {e}");
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn owner(&self, conn: u64) -> String {
        format!("{}:{conn}", self.node)
    }

    /// Called when either thread gains or loses Redis; the link is up only
    /// when both are.
    fn set_health(&self, writer: Option<bool>, reader: Option<bool>) {
        if let Some(w) = writer {
            self.writer_ok.store(w, Ordering::SeqCst);
        }
        if let Some(r) = reader {
            self.reader_ok.store(r, Ordering::SeqCst);
        }
        let up = self.writer_ok.load(Ordering::SeqCst) && self.reader_ok.load(Ordering::SeqCst);
        let mut link = lock(&self.link);
        if up == link.connected {
            return;
        }
        link.connected = up;
        let notice = if up {
            if link.ever {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            link.ever = true;
            log::info!("cluster: connected to redis (node {})", self.node);
            Notice::Connected
        } else {
            log::warn!("cluster: lost redis");
            Notice::Disconnected
        };
        // Queued under the link lock so Connected/Disconnected keep their order.
        lock(&self.notices).push_back(notice);
        drop(link);
        self.wake();
    }
}

/// A poisoned lock only means another thread panicked mid-update; the data
/// is still the best we have.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_string()).spawn(f) {
        log::error!("cluster: cannot start {name}: {e}");
    }
}

/// 16 random hex digits: node ids and epochs. `RandomState` is seeded from
/// the OS per process, which is all the randomness these need.
fn random_hex() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Back-off between reconnection attempts: doubles from 100 ms up to 500 ms,
/// so that a node is back well within PROTOCOL 12.6's 2 s of Redis answering
/// (one wait, then a few round trips) at the cost of two attempts a second.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(3)).min(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_entry_parses_and_refuses_garbage() {
        let e = NameEntry::parse("ab12:7|FF7000|Al|ce").expect("parses");
        assert_eq!(e.node, "ab12");
        assert_eq!(e.conn, 7);
        assert_eq!(e.user.name, "Al|ce");
        assert_eq!(e.user.color, "FF7000");
        assert_eq!(NameEntry::parse("ab12|FF7000|x"), None);
        assert_eq!(NameEntry::parse("ab12:x|FF7000|x"), None);
        assert_eq!(NameEntry::parse(""), None);
    }

    #[test]
    fn backoff_stays_under_two_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert!((0..100).all(|a| backoff(a) <= Duration::from_millis(500)));
    }

    #[test]
    fn random_hex_is_sixteen_hex_digits_and_varies() {
        let a = random_hex();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex());
    }
}
