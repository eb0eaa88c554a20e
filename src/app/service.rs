//! [`Wschat`]: the service this server runs. It routes each request head
//! (PROTOCOL section 2: plain routes, refusals, upgrades to chat or echo)
//! and hands WebSocket traffic to the application the connection chose.

use super::chat::cluster::ChatCluster;
use super::chat::{Chat, ChatPeer, Room};
use super::routes::{self, Health, Routes};
use super::{Answer, ConnId, Connections, Refusal, Response, Service, echo};
use crate::config::Config;
use crate::engine::close::CloseCode;
use crate::engine::handshake::{self, Decision, Rejection};
use crate::engine::http::Request;
use crate::metrics::{AppGauges, AppLabel};
use std::net::SocketAddr;

/// One connection's application state.
#[derive(Debug)]
pub enum Peer {
    Chat(ChatPeer),
    Echo,
}

/// Chat, echo and the plain routes behind one [`Service`].
#[derive(Debug)]
pub struct Wschat {
    chat: Chat,
    routes: Routes,
    echo: bool,
    allowed_origins: Vec<String>,
    /// With `--redis`: the link to the other nodes (section 12).
    cluster: Option<ChatCluster>,
}

impl Wschat {
    pub fn new(config: &Config) -> Wschat {
        Wschat {
            chat: Chat::new(config.max_chat_chars, config.rate_limit),
            routes: Routes::new(
                config.max_chat_chars,
                config.rate_limit,
                config.idle_timeout.as_secs(),
            ),
            echo: config.echo,
            allowed_origins: config.allowed_origins.clone(),
            cluster: None,
        }
    }

    /// With `--redis`, joins the cluster; the link wakes the loop through
    /// `waker` when Redis has news.
    pub fn start_cluster(&mut self, config: &Config, waker: std::sync::Arc<mio::Waker>) {
        if let Some(url) = &config.redis {
            self.cluster = Some(ChatCluster::start(
                &mut self.chat,
                url,
                &config.cluster_name,
                config.node_timeout,
                config.history,
                waker,
            ));
        }
    }

    /// Sends events the chat queued outside a client message or leave (an
    /// admin publish or kick, the console) to the cluster at once rather
    /// than at the next tick.
    pub fn flush_cluster(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.flush(&mut self.chat, None);
        }
    }

    /// False while a cluster node cannot reach Redis: `/api/...` requests
    /// past the admin checks 1-7 must then get 503 (section 11, check 8).
    pub fn is_available(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.is_available())
    }

    fn gauges(&self) -> AppGauges {
        AppGauges {
            users_named: self.chat.named_count(),
            rate_limited_total: self.chat.rate_limited_total,
            extra: self
                .cluster
                .as_ref()
                .map(|c| c.metrics_text())
                .unwrap_or_default(),
        }
    }
}

impl Service for Wschat {
    type Peer = Peer;

    fn on_request(
        &mut self,
        id: ConnId,
        request: &Request<'_>,
        _addr: SocketAddr,
        conns: &mut impl Connections<Peer>,
    ) -> Answer<Peer> {
        match handshake::decide(request, &self.allowed_origins) {
            Decision::Plain { head_only } => {
                let gauges = self.gauges();
                let health = match self.is_available() {
                    true => Health::Ok,
                    false => Health::RedisUnavailable,
                };
                Answer::Respond(self.routes.serve(request.path, head_only, health, || {
                    conns.render_metrics(&gauges)
                }))
            }
            Decision::Reject(rejection) => Answer::Respond(routes::refuse(
                rejection.status(),
                rejection.extra_headers(),
                Refusal {
                    metric: rejection.metric_reason(),
                    why: rejection_text(rejection),
                },
            )),
            // Section 12.6: no new WebSocket while the cluster is away.
            Decision::Upgrade { .. } if !self.is_available() => Answer::Respond(routes::refuse(
                503,
                &[],
                Refusal {
                    metric: "unavailable",
                    why: "redis unavailable",
                },
            )),
            Decision::Upgrade {
                accept,
                subprotocol,
            } => {
                let (peer, app) = if self.echo && request.path == "/echo" {
                    (Peer::Echo, "echo")
                } else {
                    (Peer::Chat(self.chat.new_peer(id, conns.now())), "chat")
                };
                Answer::Upgrade {
                    accept,
                    subprotocol,
                    peer,
                    app,
                }
            }
        }
    }

    fn on_body(
        &mut self,
        _id: ConnId,
        _pending: Peer,
        _body: &[u8],
        _conns: &mut impl Connections<Peer>,
    ) -> Response {
        // No route asks for a body yet.
        routes::refuse(
            404,
            &[],
            Refusal {
                metric: "bad_request",
                why: "no such route",
            },
        )
    }

    fn on_open(&mut self, id: ConnId, conns: &mut impl Connections<Peer>) {
        if let Some(Peer::Chat(_)) = conns.peer(id) {
            self.chat.on_open(&mut ChatRoom(conns), id);
        }
    }

    fn on_message(
        &mut self,
        id: ConnId,
        binary: bool,
        payload: &[u8],
        conns: &mut impl Connections<Peer>,
    ) {
        match conns.peer(id) {
            Some(Peer::Chat(_)) => {
                conns.metrics().messages_received[AppLabel::Chat as usize] += 1;
                if binary {
                    conns.close(id, CloseCode::UNSUPPORTED_DATA, "binary data on the chat");
                    return;
                }
                let now = conns.now();
                match &mut self.cluster {
                    Some(cluster) => {
                        cluster.on_message(&mut self.chat, &mut ChatRoom(conns), id, payload, now)
                    }
                    None => self.chat.on_message(&mut ChatRoom(conns), id, payload, now),
                }
            }
            Some(Peer::Echo) => {
                conns.metrics().messages_received[AppLabel::Echo as usize] += 1;
                echo::reply(conns, id, binary, payload);
            }
            None => {}
        }
    }

    fn on_leave(&mut self, _id: ConnId, peer: Peer, conns: &mut impl Connections<Peer>) {
        if let Peer::Chat(peer) = peer {
            match &mut self.cluster {
                Some(cluster) => cluster.on_leave(&mut self.chat, &mut ChatRoom(conns), peer),
                None => self.chat.on_leave(&mut ChatRoom(conns), peer),
            }
        }
    }

    fn on_wake(&mut self, conns: &mut impl Connections<Peer>) {
        if let Some(cluster) = &mut self.cluster {
            let now = conns.now();
            cluster.poll(&mut self.chat, &mut ChatRoom(conns), now);
        }
    }

    fn on_tick(&mut self, conns: &mut impl Connections<Peer>) {
        self.on_wake(conns);
    }

    /// Section 12 item 5: the leaves proposed while closing reach Redis
    /// before the process exits (they went to the link when the loop began
    /// the shutdown; this waits for them, until `until`).
    fn on_stop(&mut self, conns: &mut impl Connections<Peer>, until: std::time::Instant) {
        if let Some(cluster) = &mut self.cluster {
            let bound = until.saturating_duration_since(std::time::Instant::now());
            cluster.stop(&mut self.chat, &mut ChatRoom(conns), bound);
        }
    }
}

fn rejection_text(rejection: Rejection) -> &'static str {
    match rejection {
        Rejection::Method => "method not allowed",
        Rejection::BadRequest => "bad handshake",
        Rejection::Version => "unsupported WebSocket version",
        Rejection::Origin => "origin not allowed",
    }
}

/// The chat's view of the loop's connections: chat connections only.
struct ChatRoom<'c, C>(&'c mut C);

impl<C: Connections<Peer>> Room for ChatRoom<'_, C> {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        match self.0.peer(slot) {
            Some(Peer::Chat(peer)) => Some(peer),
            _ => None,
        }
    }

    fn send(&mut self, slot: usize, frame: &[u8]) {
        if matches!(self.0.peer(slot), Some(Peer::Chat(_))) && self.0.send(slot, frame) {
            self.0.metrics().messages_sent[AppLabel::Chat as usize] += 1;
        }
    }

    fn broadcast(&mut self, frame: &[u8]) {
        let sent = self.0.broadcast(frame, |p| matches!(p, Peer::Chat(_)));
        self.0.metrics().messages_sent[AppLabel::Chat as usize] += sent;
    }

    fn close(&mut self, slot: usize, code: CloseCode, reason: &str) {
        self.0.close(slot, code, reason);
    }
}
