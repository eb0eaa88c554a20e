//! [`Wschat`]: the service this server runs. It routes each request head
//! (PROTOCOL section 2: plain routes, refusals, upgrades to chat or echo)
//! and hands WebSocket traffic to the application the connection chose.

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
        }
    }

    fn gauges(&self) -> AppGauges {
        AppGauges {
            users_named: self.chat.named_count(),
            rate_limited_total: self.chat.rate_limited_total,
            extra: String::new(),
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
                Answer::Respond(self.routes.serve(request.path, head_only, Health::Ok, || {
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
                self.chat.on_message(&mut ChatRoom(conns), id, payload, now);
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
            self.chat.on_leave(&mut ChatRoom(conns), peer);
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
