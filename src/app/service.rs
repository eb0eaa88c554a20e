//! [`Wschat`]: the service this server runs. It routes each request head
//! (PROTOCOL section 2: plain routes, the admin API of section 11,
//! refusals, upgrades to chat or echo), hands WebSocket traffic to the
//! application the connection chose, and publishes what the console reads.

use super::admin::{self, Action, Admin, Endpoint, Outcome, Step};
use super::chat::cluster::ChatCluster;
use super::chat::{Chat, ChatPeer, Room};
use super::history::History;
use super::routes::{self, Health, Routes};
use super::{Answer, ConnId, Connections, Refusal, Response, Service, echo};
use crate::config::Config;
use crate::console::{Console, ConsoleEvent};
use crate::engine::close::CloseCode;
use crate::engine::handshake::{self, Decision, Rejection};
use crate::engine::http::Request;
use crate::metrics::{AppGauges, AppLabel};
use log::info;
use std::net::SocketAddr;

/// One connection's application state.
#[derive(Debug)]
pub enum Peer {
    Chat(ChatPeer),
    Echo,
    /// An admin request whose body is being read.
    Admin(PendingAdmin),
}

/// What an admin request still needs once its body is in.
#[derive(Debug)]
pub struct PendingAdmin {
    endpoint: Endpoint,
    /// For the log line, written when the request is answered.
    addr: SocketAddr,
}

/// Chat, echo, the plain routes and the admin API behind one [`Service`].
#[derive(Debug)]
pub struct Wschat {
    chat: Chat,
    routes: Routes,
    /// The admin API, with `--admin-token` or `--admin-token-file`.
    admin: Option<Admin>,
    /// Standard input, with `--console`, until it ends.
    console: Option<Console>,
    echo: bool,
    allowed_origins: Vec<String>,
    /// With `--redis`: the link to the other nodes (section 12).
    cluster: Option<ChatCluster>,
}

impl Wschat {
    pub fn new(config: &Config) -> Wschat {
        Wschat {
            chat: Chat::new(
                config.max_chat_chars,
                config.rate_limit,
                History::new(config.history, config.max_output_bytes),
            ),
            routes: Routes::new(
                config.max_chat_chars,
                config.rate_limit,
                config.idle_timeout.as_secs(),
            ),
            admin: config
                .admin_token
                .as_deref()
                .map(|token| Admin::new(token, config.max_chat_chars)),
            console: None,
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

    /// Sends what the chat queued outside a client message or leave (an
    /// admin publish or kick, a console line) to the cluster at once.
    fn flush_cluster(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.flush(&mut self.chat, None);
        }
    }

    /// False while a cluster node cannot reach Redis (section 12.6).
    pub fn is_available(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.is_available())
    }

    /// Publishes the lines `console` reads; the loop's waker must be the
    /// one it was given, so that [`Service::on_wake`] drains it.
    pub fn attach_console(&mut self, console: Console) {
        self.console = Some(console);
    }

    fn gauges(&self) -> AppGauges {
        let mut extra = String::new();
        self.chat.history().render_metrics(&mut extra);
        if let Some(cluster) = &self.cluster {
            extra.push_str(&cluster.metrics_text());
        }
        AppGauges {
            users_named: self.chat.named_count(),
            rate_limited_total: self.chat.rate_limited_total,
            extra,
        }
    }
}

/// Section 11's checks 1-5 on a plain request under `/api/`.
fn admin_request(
    admin_api: &Admin,
    chat: &mut Chat,
    request: &Request<'_>,
    addr: SocketAddr,
    conns: &mut impl Connections<Peer>,
) -> Answer<Peer> {
    let response = match admin_api.request(request) {
        Step::Respond(response) => response,
        Step::Act(action) => perform(chat, action, conns),
        Step::ReadBody {
            endpoint,
            len,
            expect_continue,
        } => {
            return Answer::ReadBody {
                length: len,
                send_continue: expect_continue,
                pending: Peer::Admin(PendingAdmin { endpoint, addr }),
            };
        }
    };
    admin::log_request(addr, request.method, request.path, Some(response.status));
    Answer::Respond(plain(response))
}

/// Checks 8 and 9 and the action itself; the chat applies it through
/// its event path like any other event.
fn perform(chat: &mut Chat, action: Action, conns: &mut impl Connections<Peer>) -> admin::Response {
    if chat.unavailable {
        return action.answer(Outcome::Unavailable);
    }
    let room = &mut ChatRoom(conns);
    let outcome = match &action {
        Action::Users { .. } => Outcome::Users(admin::users_body(chat.users())),
        Action::Publish { message, toname } => {
            match chat.announce(room, message.clone(), toname.clone()) {
                Ok(id) => Outcome::Done { id },
                Err(_) => Outcome::UnknownUser,
            }
        }
        Action::Kick { name, reason } => match chat.kick(room, name, reason.clone()) {
            Ok(()) => Outcome::Done { id: None },
            Err(_) => Outcome::UnknownUser,
        },
    };
    action.answer(outcome)
}

/// An admin response as the loop sends it (not a refusal: the admin API
/// answered).
fn plain(response: admin::Response) -> Response {
    let mut bytes = Vec::new();
    response.write(&mut bytes);
    Response {
        bytes,
        status: response.status,
        refusal: None,
    }
}

impl Service for Wschat {
    type Peer = Peer;

    fn on_request(
        &mut self,
        id: ConnId,
        request: &Request<'_>,
        addr: SocketAddr,
        conns: &mut impl Connections<Peer>,
    ) -> Answer<Peer> {
        // The admin checks take the place of section 2's method check, for
        // plain requests only: a handshake to /api/... is a chat upgrade.
        if let Some(admin_api) = &self.admin
            && admin::is_admin_path(request.path)
            && !handshake::is_attempt(request)
        {
            let answer = admin_request(admin_api, &mut self.chat, request, addr, conns);
            self.flush_cluster();
            return answer;
        }
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
        pending: Peer,
        body: &[u8],
        conns: &mut impl Connections<Peer>,
    ) -> Response {
        let (Peer::Admin(pending), Some(admin_api)) = (pending, &self.admin) else {
            // Only the admin API asks for a body.
            return routes::refuse(
                404,
                &[],
                Refusal {
                    metric: "bad_request",
                    why: "no such route",
                },
            );
        };
        let response = match admin_api.body(pending.endpoint, body) {
            Ok(action) => perform(&mut self.chat, action, conns),
            Err(response) => response,
        };
        admin::log_request(
            pending.addr,
            "POST",
            pending.endpoint.path(),
            Some(response.status),
        );
        self.flush_cluster();
        plain(response)
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
            Some(Peer::Admin(_)) | None => {}
        }
    }

    fn on_leave(&mut self, _id: ConnId, peer: Peer, conns: &mut impl Connections<Peer>) {
        match peer {
            Peer::Chat(peer) => match &mut self.cluster {
                Some(cluster) => cluster.on_leave(&mut self.chat, &mut ChatRoom(conns), peer),
                None => self.chat.on_leave(&mut ChatRoom(conns), peer),
            },
            // The body never came (check 6): closed without a response.
            Peer::Admin(pending) => {
                admin::log_request(pending.addr, "POST", pending.endpoint.path(), None);
            }
            Peer::Echo => {}
        }
    }

    /// The console thread has lines (or its end) for us, or the cluster
    /// link has notices.
    fn on_wake(&mut self, conns: &mut impl Connections<Peer>) {
        if let Some(cluster) = &mut self.cluster {
            let now = conns.now();
            cluster.poll(&mut self.chat, &mut ChatRoom(conns), now);
        }
        while let Some(event) = self.console.as_ref().and_then(Console::try_recv) {
            match event {
                ConsoleEvent::Line(text) => {
                    let room = &mut ChatRoom(conns);
                    if let Ok(Some(id)) = self.chat.announce(room, text, None) {
                        info!("console: announcement {id} published");
                    }
                }
                ConsoleEvent::Eof => {
                    info!("console: end of standard input; the server goes on");
                    self.console = None;
                }
            }
        }
        self.flush_cluster();
    }

    fn on_tick(&mut self, conns: &mut impl Connections<Peer>) {
        if let Some(cluster) = &mut self.cluster {
            let now = conns.now();
            cluster.poll(&mut self.chat, &mut ChatRoom(conns), now);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frame::Opcode;
    use crate::metrics::Metrics;
    use std::time::Instant;

    const TOKEN: &str = "service-token-0123456789";

    /// No connection is open: the admin API answers from the chat's state.
    struct NoConnections(Metrics);

    impl Connections<Peer> for NoConnections {
        fn now(&self) -> Instant {
            Instant::now()
        }
        fn peer(&mut self, _: ConnId) -> Option<&mut Peer> {
            None
        }
        fn send(&mut self, _: ConnId, _: &[u8]) -> bool {
            false
        }
        fn send_frame(&mut self, _: ConnId, _: Opcode, _: &[u8]) -> bool {
            false
        }
        fn broadcast(&mut self, _: &[u8], _: impl FnMut(&Peer) -> bool) -> u64 {
            0
        }
        fn close(&mut self, _: ConnId, _: CloseCode, _: &str) {}
        fn metrics(&mut self) -> &mut Metrics {
            &mut self.0
        }
        fn render_metrics(&mut self, _: &AppGauges) -> String {
            String::new()
        }
    }

    /// The status of `request_line` with the token and, for `Some(body)`,
    /// that body.
    fn status_of(service: &mut Wschat, request_line: &str, body: Option<&str>) -> u16 {
        let length = body.map_or(String::new(), |b| {
            format!("Content-Length: {}\r\n", b.len())
        });
        let head = format!("{request_line}\r\nAuthorization: Bearer {TOKEN}\r\n{length}\r\n");
        let request = Request::parse(head.as_bytes()).unwrap();
        let conns = &mut NoConnections(Metrics::default());
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let response = match service.on_request(1, &request, addr, conns) {
            Answer::Respond(response) => response,
            Answer::ReadBody {
                pending, length, ..
            } => {
                let body = body.unwrap_or_default();
                assert_eq!(length, body.len());
                service.on_body(1, pending, body.as_bytes(), conns)
            }
            Answer::Upgrade { .. } => panic!("{request_line} upgraded"),
        };
        assert!(response.refusal.is_none());
        response.status
    }

    /// Check 8 (a node cut off from its cluster) comes after the body's
    /// checks and before the user's.
    #[test]
    fn a_lost_cluster_is_503_after_check_7_and_before_check_9() {
        let mut service = Wschat::new(&Config {
            admin_token: Some(TOKEN.into()),
            ..Config::default()
        });
        let kick = "POST /api/kick HTTP/1.1";
        assert_eq!(
            status_of(&mut service, kick, Some(r#"{"name":"nobody"}"#)),
            404
        );
        service.chat.unavailable = true;
        assert_eq!(
            status_of(&mut service, kick, Some(r#"{"name":"nobody"}"#)),
            503
        );
        assert_eq!(status_of(&mut service, kick, Some(r#"{"name":5}"#)), 400);
        let publish = "POST /api/publish HTTP/1.1";
        assert_eq!(
            status_of(&mut service, publish, Some(r#"{"message":"x"}"#)),
            503
        );
        assert_eq!(
            status_of(&mut service, "GET /api/users HTTP/1.1", None),
            503
        );
        // Checks 1-5 still answer first.
        assert_eq!(status_of(&mut service, "GET /api/kick HTTP/1.1", None), 405);
    }
}
