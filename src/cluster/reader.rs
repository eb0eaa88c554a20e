//! The reader thread: follows the event stream with `XREAD BLOCK` from the
//! last id it saw, turns each entry into a [`Notice`] in stream order, and
//! keeps the replica of names and history that `users()` and `history()`
//! read. When Redis comes back with a new epoch (it lost its data) the
//! replica is rebuilt from an atomic snapshot and reading starts at the new
//! stream's beginning, so held-back events that other nodes published first
//! are not missed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::Value;

use super::scripts;
use super::{HistoryEntry, NameEntry, Notice, Replica, Shared, backoff, lock, random_hex};

/// How long one `XREAD` waits for entries; also how soon the thread notices
/// a stop request.
const BLOCK_MS: u64 = 500;
/// How often a busy reader checks the epoch (an idle one checks after each
/// empty `XREAD`).
const EPOCH_CHECK: Duration = Duration::from_secs(1);
/// Entries taken per `XREAD`.
const BATCH: usize = 1000;

pub(super) struct Reader {
    shared: Arc<Shared>,
    client: redis::Client,
    /// Epoch of the stream `last_id` belongs to.
    epoch: Option<String>,
    last_id: String,
    /// To the writer: check your connection too.
    writer: std::sync::mpsc::Sender<super::writer::Command>,
}

impl Reader {
    pub(super) fn new(
        shared: Arc<Shared>,
        client: redis::Client,
        writer: std::sync::mpsc::Sender<super::writer::Command>,
    ) -> Reader {
        Reader {
            shared,
            client,
            epoch: None,
            last_id: "0-0".to_string(),
            writer,
        }
    }

    pub(super) fn run(mut self) {
        let mut attempt = 0u32;
        while !self.shared.stopping() {
            match self.session() {
                Ok(()) => break,
                Err(e) => {
                    self.shared.set_health(None, Some(false));
                    // The writer's idle connection may be just as dead but
                    // would only find out at its next heartbeat.
                    let _ = self.writer.send(super::writer::Command::Check);
                    log::debug!("cluster reader: {e}");
                    std::thread::sleep(backoff(attempt));
                    attempt = attempt.saturating_add(1);
                }
            }
            // A session that got as far as reading resets the back-off.
            if self.shared.reader_ok.load(Ordering::SeqCst) {
                attempt = 0;
            }
        }
        self.shared.set_health(None, Some(false));
    }

    /// One connection's life: returns `Ok` only when asked to stop.
    fn session(&mut self) -> redis::RedisResult<()> {
        let mut con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(1))?;
        con.set_read_timeout(Some(Duration::from_millis(BLOCK_MS + 1500)))?;
        con.set_write_timeout(Some(Duration::from_secs(2)))?;
        self.sync(&mut con)?;
        self.shared.set_health(None, Some(true));
        let shared = self.shared.clone();
        let keys = &shared.keys;
        let mut checked = Instant::now();
        while !self.shared.stopping() {
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&keys.events)
                .arg(&self.last_id)
                .query(&mut con)?;
            let entries = stream_entries(reply);
            let idle = entries.is_empty();
            let foreign = if idle { None } else { self.apply(entries) };
            if foreign.is_some() || idle || checked.elapsed() >= EPOCH_CHECK {
                // Make sure the data was not lost under a live connection
                // (`FLUSHALL`); a new epoch means replaying the new stream
                // from its start.
                checked = Instant::now();
                let epoch: Option<String> = redis::cmd("GET").arg(&keys.epoch).query(&mut con)?;
                if epoch != self.epoch {
                    let _ = self.writer.send(super::writer::Command::Check);
                    self.sync(&mut con)?;
                } else if let Some(sid) = foreign {
                    // An entry of an epoch that is not the current one:
                    // nothing to resync to; skip it rather than loop on it.
                    log::warn!("cluster: skipping stream entry {sid} of a stale epoch");
                    self.last_id = sid;
                }
            }
        }
        Ok(())
    }

    /// Reads the epoch; on a new one (first start, or Redis lost its data)
    /// replaces the replica with the snapshot and reads from that point.
    fn sync(&mut self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let keys = &self.shared.keys;
        let reply: Value = redis::Script::new(scripts::SNAPSHOT)
            .key(&keys.epoch)
            .key(&keys.names)
            .key(&keys.events)
            .key(&keys.history)
            .arg(random_hex())
            .invoke(con)?;
        let Value::Array(parts) = reply else {
            return Err(bad_reply("snapshot"));
        };
        let mut parts = parts.into_iter();
        let (Some(epoch), Some(last), Some(names), Some(history)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad_reply("snapshot"));
        };
        let (Some(epoch), Some(last)) = (text(epoch), text(last)) else {
            return Err(bad_reply("snapshot"));
        };
        if self.epoch.as_deref() == Some(epoch.as_str()) {
            return Ok(());
        }
        let first = self.epoch.is_none();
        let mut replica = Replica::default();
        if first {
            // A new node starts after what is already there: the snapshot
            // covers it.
            self.fill(&mut replica, names, history);
            self.last_id = last;
        } else {
            // Redis lost its data: the new stream holds everything since, so
            // it is replayed from its start, including what nodes that came
            // back first published. Names start from the snapshot (replaying
            // claims and releases onto it ends in the same state); history is
            // rebuilt by the replay alone, so nothing is in it twice.
            self.fill(&mut replica, names, Value::Nil);
            self.last_id = "0-0".to_string();
            log::warn!("cluster: redis lost its data (epoch {epoch}); resyncing");
            self.shared.notify([Notice::NewEpoch]);
        }
        *lock(&self.shared.replica) = replica;
        self.epoch = Some(epoch);
        Ok(())
    }

    fn fill(&self, replica: &mut Replica, names: Value, history: Value) {
        for pair in values(names).chunks(2) {
            if let [k, v] = pair
                && let (Some(k), Some(v)) = (text(k.clone()), text(v.clone()))
                && let Some(entry) = NameEntry::parse(&v)
            {
                replica.users.insert(k, entry);
            }
        }
        for item in values(history) {
            if let Some(s) = text(item)
                && let Some((id, json)) = s.split_once('\n')
            {
                replica.history.push_back(HistoryEntry {
                    id: id.to_string(),
                    json: json.to_string(),
                });
            }
        }
        trim_history(&mut replica.history, self.shared.history_len);
    }

    /// Applies entries in order. Stops at the first entry written under
    /// another epoch (Redis lost its data under this connection) and returns
    /// its id, unapplied, so the caller can resync.
    fn apply(&mut self, entries: Vec<(String, Vec<(String, String)>)>) -> Option<String> {
        let epoch = self.epoch.clone().unwrap_or_default();
        let node = &self.shared.node;
        let mut notices = Vec::with_capacity(entries.len());
        let mut replica = lock(&self.shared.replica);
        let mut foreign = None;
        for (sid, fields) in entries {
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let entry_epoch = get("e");
            if !entry_epoch.is_empty() && entry_epoch != epoch {
                foreign = Some(sid);
                break;
            }
            let id = format!("{epoch}-{sid}");
            let (ck, cv) = (get("ck"), get("cv"));
            match get("k") {
                "ev" => {
                    let released = get("r");
                    if !released.is_empty() {
                        replica.users.remove(released);
                    }
                    if !ck.is_empty()
                        && let Some(entry) = NameEntry::parse(cv)
                    {
                        replica.users.insert(ck.to_string(), entry);
                    }
                    let json = get("d").to_string();
                    if get("h") == "1" && self.shared.history_len > 0 {
                        replica.history.push_back(HistoryEntry {
                            id: id.clone(),
                            json: json.clone(),
                        });
                        trim_history(&mut replica.history, self.shared.history_len);
                    }
                    let ticket = if get("n") == node {
                        get("t").parse().ok()
                    } else {
                        None
                    };
                    notices.push(Notice::Event { id, json, ticket });
                }
                "free" => {
                    replica.users.remove(ck);
                    if let Some(entry) = NameEntry::parse(cv) {
                        let conn = (entry.node == *node).then_some(entry.conn);
                        notices.push(Notice::Freed {
                            id,
                            name: entry.user.name,
                            conn,
                        });
                    }
                }
                "reg" => {
                    if let Some(entry) = NameEntry::parse(cv) {
                        notices.push(Notice::Registered {
                            holder: entry.holder(),
                        });
                        replica.users.insert(ck.to_string(), entry);
                    }
                }
                other => log::warn!("cluster: unknown stream entry kind {other:?}"),
            }
            self.last_id = sid;
        }
        drop(replica);
        self.shared
            .received
            .fetch_add(notices.len() as u64, Ordering::Relaxed);
        self.shared.notify(notices);
        foreign
    }
}

fn trim_history(h: &mut std::collections::VecDeque<HistoryEntry>, cap: usize) {
    while h.len() > cap {
        h.pop_front();
    }
}

fn bad_reply(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        what.to_string(),
    ))
}

/// A reply's string form (bulk or simple string), if it has one.
pub(super) fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Okay => Some("OK".to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A reply's elements (array, set; a map flattened to key, value, ...).
pub(super) fn values(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an `XREAD` reply for one stream: `(id, [(field, value)])`.
/// Nil (the block timed out) is no entries; RESP2 arrays and RESP3 maps are
/// both understood.
fn stream_entries(reply: Value) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut streams = values(reply).into_iter();
    // Pairs of (stream name, entries).
    while let Some(first) = streams.next() {
        let entries = match first {
            Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
            // RESP3 map flattened by `values`: name then entries.
            other if text(other.clone()).is_some() => streams.next(),
            _ => None,
        };
        for entry in entries.map(values).unwrap_or_default() {
            let mut parts = values(entry).into_iter();
            let (Some(id), Some(fields)) = (parts.next().and_then(text), parts.next()) else {
                continue;
            };
            let flat: Vec<Option<String>> = values(fields).into_iter().map(text).collect();
            let fields = flat
                .chunks(2)
                .filter_map(|c| match c {
                    [Some(k), Some(v)] => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect();
            out.push((id, fields));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn xread_reply_is_parsed_in_order() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("{c}:events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("k"), bulk("ev"), bulk("d"), bulk("{}")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("k")])]),
            ]),
        ])]);
        let e = stream_entries(reply);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "1-0");
        assert_eq!(
            e[0].1,
            vec![("k".into(), "ev".into()), ("d".into(), "{}".into())]
        );
        assert_eq!(e[1].0, "2-0");
        assert!(e[1].1.is_empty(), "odd field list dropped, not panicking");
        assert!(stream_entries(Value::Nil).is_empty());
        assert!(stream_entries(Value::Int(3)).is_empty());
    }

    #[test]
    fn keys_share_one_hash_tag() {
        use super::scripts::Keys;
        let k = Keys::new("chat");
        assert_eq!(k.events, "{chat}:events");
        assert_eq!(k.lease("ab"), "{chat}:node:ab");
    }
}
