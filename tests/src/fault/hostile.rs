//! The hostile outsider of the `hostile-outsider` fault scenario: a process
//! that is no member and holds no peer secret (in secure mode it presents
//! the client certificate, which names no member) and tries, on every
//! member's peer port, each peer call an attacker would: forge a session
//! with the super identity, act for another live session, add super to its
//! own session, close or touch a session, list live sessions through the
//! evidence call, and raise Raft terms to `u64::MAX`.
//!
//! Every call must be refused (gRPC `UNAUTHENTICATED` or `PERMISSION_DENIED`,
//! or in secure mode a failed TLS handshake). A call that is answered is
//! `ACCEPTED`, a violation; any other outcome (a member that does not answer
//! at all, an `INVALID_ARGUMENT` ...) is `UNEXPECTED`, also a violation:
//! nothing then shows that the member refused the outsider.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ensemble_client::{Client, Options};
use ensemble_proto::peer::peer_client::PeerClient;
use ensemble_proto::peer::Payload;
use ensemble_proto::SessionId;
use ensemble_server::consensus::TypeConfig;
use ensemble_server::state::acl::Identity;
use ensemble_server::state::sessions::Secret;
use ensemble_server::state::{Command, Op};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, SnapshotMeta, Vote};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use tonic::{Code, Request, Status};

/// The member id the outsider claims in Raft messages: no member has it.
pub const OUTSIDER_ID: u64 = 4242;

/// How long one peer call may take: a refusal is immediate, so a call that
/// hangs this long is itself a finding.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors that keep the outsider from starting: not a verdict on the cluster.
#[derive(Debug, thiserror::Error)]
pub enum HostileError {
    /// A `--peers` entry is not `[NAME=]HOST:PORT`.
    #[error("bad peer '{0}': expected [NAME=]HOST:PORT")]
    BadPeer(String),
    /// The TLS material could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The legitimate sessions the attacks name could not be opened.
    #[error("could not open the victim sessions on the client port: {0}")]
    Sessions(String),
    /// No member's peer port accepts TCP connections: wrong addresses, or
    /// the cluster is not up.
    #[error("no peer port reachable: {0}")]
    Unreachable(String),
    /// A peer message could not be encoded (a bug here, not in the cluster).
    #[error("can not encode a peer message: {0}")]
    Encode(#[from] bincode::Error),
}

/// A member's peer port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTarget {
    /// The member's name: its certificate's name in secure mode, and the
    /// name reports use.
    pub name: String,
    /// HOST:PORT of its peer port.
    pub addr: String,
}

impl PeerTarget {
    /// Parses `NAME=HOST:PORT` or `HOST:PORT` (named by its address).
    pub fn parse(s: &str) -> Result<Self, HostileError> {
        let s = s.trim();
        let (name, addr) = match s.split_once('=') {
            Some((n, a)) => (n.trim(), a.trim()),
            None => (s, s),
        };
        match addr.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !name.is_empty() && p.parse::<u16>().is_ok() => Ok(PeerTarget {
                name: name.to_string(),
                addr: addr.to_string(),
            }),
            _ => Err(HostileError::BadPeer(s.to_string())),
        }
    }
}

/// The TLS settings the outsider dials peer ports with.
#[derive(Clone)]
pub struct PeerTls {
    /// The cluster's CA, so the outsider gets as far as the member's check.
    pub ca_pem: Vec<u8>,
    /// The certificate and key it presents (the client certificate: it is
    /// signed by the cluster's CA but names no member).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// What the outsider does.
#[derive(Clone)]
pub struct Config {
    /// Every member's peer port.
    pub peers: Vec<PeerTarget>,
    /// Client endpoints, where the outsider opens two ordinary sessions:
    /// the victim whose id it names, and its own.
    pub endpoints: Vec<String>,
    /// Options of those sessions (TLS and credentials of the cluster's mode).
    pub options: Options,
    /// TLS for the peer ports; None: plaintext.
    pub peer_tls: Option<PeerTls>,
    /// Attack rounds go on this long.
    pub duration: Duration,
    /// Pause between rounds.
    pub every: Duration,
}

/// How a member met one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Refused before anything happened.
    Refused,
    /// Answered: the member did what an outsider asked.
    Accepted,
    /// Neither answered nor refused as it should be.
    Unexpected,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Refused => "refused",
            Verdict::Accepted => "ACCEPTED",
            Verdict::Unexpected => "UNEXPECTED",
        })
    }
}

/// The peer calls, as the proto names them.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    WatchLeader,
    Touch,
    Evidence,
}

/// One attack: a peer call with a payload crafted by the outsider.
struct Attack {
    name: &'static str,
    rpc: Rpc,
    payload: Payload,
}

fn payload<T: serde::Serialize>(v: &T) -> Result<Payload, HostileError> {
    Ok(Payload {
        data: bincode::serialize(v)?,
    })
}

/// The attacks of one round. `victim` is another client's live session,
/// `own` the outsider's own; `tag` keeps forged paths apart between runs.
fn attacks(victim: SessionId, own: SessionId, tag: &str) -> Result<Vec<Attack>, HostileError> {
    let super_admin = Identity {
        scheme: "super".to_string(),
        id: "admin".to_string(),
    };
    let forward = |c: Command| payload(&vec![c]);
    let max_vote = Vote::new_committed(u64::MAX, OUTSIDER_ID);
    let max_log = Some(LogId::new(
        CommittedLeaderId::new(u64::MAX, OUTSIDER_ID),
        u64::MAX,
    ));
    Ok(vec![
        // Reconnaissance first: every live session id and how fresh it is.
        Attack {
            name: "evidence (list live sessions)",
            rpc: Rpc::Evidence,
            payload: payload(&OUTSIDER_ID)?,
        },
        Attack {
            name: "read_index",
            rpc: Rpc::ReadIndex,
            payload: payload(&())?,
        },
        Attack {
            name: "watch_leader (hold a stream)",
            rpc: Rpc::WatchLeader,
            payload: payload(&())?,
        },
        Attack {
            name: "touch another session (keep it alive)",
            rpc: Rpc::Touch,
            payload: payload(&vec![(victim, 0u64)])?,
        },
        Attack {
            name: "forward CreateSession as super with a chosen secret",
            rpc: Rpc::Forward,
            payload: forward(Command::CreateSession {
                secret: Secret::new(b"chosen-by-the-hostile-outsider!!".to_vec()),
                timeout_ms: 30_000,
                identities: vec![super_admin.clone()],
            })?,
        },
        Attack {
            name: "forward Txn naming another session (no secret)",
            rpc: Rpc::Forward,
            payload: forward(Command::Txn {
                session_id: victim,
                ops: vec![Op::Create {
                    path: format!("/hostile-outsider-{tag}"),
                    data: b"forged".to_vec(),
                    ephemeral: true,
                    sequential: false,
                    acl: vec![],
                }],
                multi: false,
                client_ip: None,
            })?,
        },
        Attack {
            name: "forward AddIdentity super to its own session",
            rpc: Rpc::Forward,
            payload: forward(Command::AddIdentity {
                session_id: own,
                identity: super_admin,
            })?,
        },
        Attack {
            name: "forward CloseSession of another session",
            rpc: Rpc::Forward,
            payload: forward(Command::CloseSession { session_id: victim })?,
        },
        Attack {
            name: "install_snapshot with term u64::MAX",
            rpc: Rpc::InstallSnapshot,
            payload: payload(&InstallSnapshotRequest::<TypeConfig> {
                vote: max_vote,
                meta: SnapshotMeta::default(),
                offset: 0,
                data: vec![],
                done: false,
            })?,
        },
        Attack {
            name: "append_entries with term u64::MAX",
            rpc: Rpc::AppendEntries,
            payload: payload(&AppendEntriesRequest::<TypeConfig> {
                vote: max_vote,
                prev_log_id: None,
                entries: vec![],
                leader_commit: None,
            })?,
        },
        Attack {
            name: "vote with term u64::MAX",
            rpc: Rpc::Vote,
            payload: payload(&VoteRequest::<u64> {
                vote: Vote::new(u64::MAX, OUTSIDER_ID),
                last_log_id: max_log,
            })?,
        },
    ])
}

/// One call's outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The member's name.
    pub member: String,
    /// What was tried.
    pub attack: &'static str,
    /// How the member met it.
    pub verdict: Verdict,
    /// The status or reply, for the report.
    pub detail: String,
}

/// Everything the outsider tried.
#[derive(Debug, Default)]
pub struct Report {
    /// Rounds run (each tries every attack on every member).
    pub rounds: u32,
    /// Every call, in order.
    pub attempts: Vec<Attempt>,
}

impl Report {
    /// Calls that were not refused, one line each: (member, attack) with
    /// how often and the first detail.
    pub fn violations(&self) -> Vec<String> {
        let mut seen: BTreeMap<(String, &'static str, Verdict), (u32, String)> = BTreeMap::new();
        for a in self.attempts.iter().filter(|a| a.verdict != Verdict::Refused) {
            seen.entry((a.member.clone(), a.attack, a.verdict))
                .or_insert((0, a.detail.clone()))
                .0 += 1;
        }
        seen.into_iter()
            .map(|((member, attack, verdict), (n, detail))| {
                format!(
                    "{member}: {attack}: {verdict} ({n} of {} rounds): {detail}",
                    self.rounds
                )
            })
            .collect()
    }

    /// How many calls met each verdict.
    pub fn count(&self, v: Verdict) -> usize {
        self.attempts.iter().filter(|a| a.verdict == v).count()
    }
}

fn tls_config(tls: &PeerTls, name: &str) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .domain_name(name.to_string());
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(TlsIdentity::from_pem(cert, key));
    }
    config
}

/// One channel (one connection) to a member's peer port.
fn peer_client(target: &PeerTarget, tls: Option<&PeerTls>) -> Result<PeerClient<Channel>, HostileError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.addr))
        .map_err(|_| HostileError::BadPeer(target.addr.clone()))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls_config(tls, &target.name))
            .map_err(|e| HostileError::Tls(error_chain(&e)))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(3))
        .timeout(CALL_TIMEOUT);
    Ok(PeerClient::new(endpoint.connect_lazy()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Whether the member's peer port takes TCP connections at all: in secure
/// mode, a failed call then means the TLS handshake refused the outsider,
/// not that the member is gone.
async fn reachable(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: connect timed out")),
    }
}

/// How a member met a call. `tls`: the call went over TLS with a
/// certificate that names no member, to a port that took the TCP
/// connection, so a transport failure is the handshake's refusal.
fn judge(outcome: Result<String, Status>, tls: bool) -> (Verdict, String) {
    match outcome {
        Ok(reply) => (Verdict::Accepted, reply),
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
            (Verdict::Refused, format!("{:?}: {}", s.code(), s.message()))
        }
        Err(s)
            if tls
                && matches!(
                    s.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                ) =>
        {
            (Verdict::Refused, format!("TLS refused: {}", error_chain(&s)))
        }
        Err(s) => (
            Verdict::Unexpected,
            format!("{:?}: {}", s.code(), error_chain(&s)),
        ),
    }
}

/// Says what an answered call got back, for the report: how many sessions
/// an evidence reply listed (a bincode Vec starts with its length).
fn describe(rpc: Rpc, reply: &Payload) -> String {
    match rpc {
        Rpc::Evidence if reply.data.len() >= 8 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&reply.data[..8]);
            format!(
                "answered with the evidence of {} live sessions",
                u64::from_le_bytes(len)
            )
        }
        _ => format!("answered ({} bytes)", reply.data.len()),
    }
}

async fn call(client: &mut PeerClient<Channel>, attack: &Attack) -> Result<String, Status> {
    let mut req = Request::new(attack.payload.clone());
    req.set_timeout(CALL_TIMEOUT);
    let reply = match attack.rpc {
        Rpc::AppendEntries => client.append_entries(req).await?,
        Rpc::Vote => client.vote(req).await?,
        Rpc::InstallSnapshot => client.install_snapshot(req).await?,
        Rpc::Forward => client.forward(req).await?,
        Rpc::ReadIndex => client.read_index(req).await?,
        Rpc::Touch => client.touch(req).await?,
        Rpc::Evidence => client.evidence(req).await?,
        // Opening the stream is the acceptance; it never carries a message.
        Rpc::WatchLeader => {
            client.watch_leader(req).await?;
            return Ok("the stream opened".to_string());
        }
    };
    Ok(describe(attack.rpc, reply.get_ref()))
}

/// Runs attack rounds on every member for `cfg.duration`, printing each
/// call of the first round and every call that was not refused.
pub async fn run(cfg: Config) -> Result<Report, HostileError> {
    if cfg.peers.is_empty() {
        return Err(HostileError::BadPeer(String::new()));
    }
    let mut unreachable = Vec::new();
    for p in &cfg.peers {
        if let Err(e) = reachable(&p.addr).await {
            unreachable.push(e);
        }
    }
    if unreachable.len() == cfg.peers.len() {
        return Err(HostileError::Unreachable(unreachable.join("; ")));
    }
    let session = |cfg: &Config| {
        let options = Options {
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            ..cfg.options.clone()
        };
        let endpoints = cfg.endpoints.clone();
        async move { Client::connect(&endpoints, options).await }
    };
    let victim = session(&cfg)
        .await
        .map_err(|e| HostileError::Sessions(e.to_string()))?;
    let own = session(&cfg)
        .await
        .map_err(|e| HostileError::Sessions(e.to_string()))?;
    let tag = std::process::id().to_string();
    let report = attack(
        &cfg.peers,
        cfg.peer_tls.as_ref(),
        (victim.session_id(), own.session_id()),
        &tag,
        cfg.duration,
        cfg.every,
    )
    .await?;
    // Did a forged txn take effect? (Only the victim's session could have
    // made that path.)
    if let Ok(Some(_)) = own.exists(&format!("/hostile-outsider-{tag}")).await {
        println!("hostile-peer: /hostile-outsider-{tag} exists: a forged txn took effect");
    }
    let _ = victim.close().await;
    let _ = own.close().await;
    Ok(report)
}

/// The attack rounds of [`run`]: every attack on every member, every
/// `every`, for `duration` (at least one round). `sessions`: the victim's
/// id and the outsider's own.
pub async fn attack(
    peers: &[PeerTarget],
    tls: Option<&PeerTls>,
    sessions: (SessionId, SessionId),
    tag: &str,
    duration: Duration,
    every: Duration,
) -> Result<Report, HostileError> {
    let attacks = attacks(sessions.0, sessions.1, tag)?;
    println!(
        "hostile-peer: victim session {}, own session {}, {} members, {} attacks a round, TLS: {}",
        sessions.0,
        sessions.1,
        peers.len(),
        attacks.len(),
        tls.is_some()
    );
    let mut clients = Vec::new();
    for p in peers {
        clients.push((p.clone(), peer_client(p, tls)?));
    }

    let mut report = Report::default();
    let end = Instant::now() + duration;
    loop {
        report.rounds += 1;
        for (target, client) in clients.iter_mut() {
            // A port that takes no TCP connection is a member that is down:
            // UNEXPECTED, never counted as a TLS refusal.
            let up = reachable(&target.addr).await;
            for attack in &attacks {
                let (verdict, detail) = match &up {
                    Err(e) => (Verdict::Unexpected, format!("peer port unreachable: {e}")),
                    Ok(()) => judge(call(client, attack).await, tls.is_some()),
                };
                if report.rounds == 1 || verdict != Verdict::Refused {
                    println!(
                        "round {} {} {}: {verdict}: {detail}",
                        report.rounds, target.name, attack.name
                    );
                }
                report.attempts.push(Attempt {
                    member: target.name.clone(),
                    attack: attack.name,
                    verdict,
                    detail,
                });
            }
        }
        if Instant::now() + every >= end {
            break;
        }
        tokio::time::sleep(every).await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_and_without_a_name() {
        assert_eq!(
            PeerTarget::parse("ensemble1=172.18.0.2:2881").unwrap(),
            PeerTarget {
                name: "ensemble1".into(),
                addr: "172.18.0.2:2881".into()
            }
        );
        assert_eq!(PeerTarget::parse("10.0.0.1:2881").unwrap().name, "10.0.0.1:2881");
        for bad in ["", "ensemble1=", "host", "host:port", "=1.2.3.4:1", "x=:1"] {
            assert!(PeerTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_an_authentication_refusal_counts_as_refused() {
        let refused = |s: Status, tls| judge(Err(s), tls).0;
        assert_eq!(judge(Ok("x".into()), false).0, Verdict::Accepted);
        assert_eq!(refused(Status::unauthenticated("no"), false), Verdict::Refused);
        assert_eq!(refused(Status::permission_denied("no"), false), Verdict::Refused);
        // Plaintext: a member that does not answer proves nothing.
        assert_eq!(refused(Status::unavailable("down"), false), Verdict::Unexpected);
        assert_eq!(
            refused(Status::invalid_argument("bad"), false),
            Verdict::Unexpected
        );
        // TLS: a transport failure on a reachable port is the handshake refusing.
        assert_eq!(refused(Status::unavailable("alert"), true), Verdict::Refused);
        assert_eq!(
            refused(Status::invalid_argument("bad"), true),
            Verdict::Unexpected
        );
    }

    #[test]
    fn every_attack_encodes_and_any_non_refusal_is_a_violation() {
        let a = attacks(SessionId(1), SessionId(2), "t").unwrap();
        assert!(a.len() >= 11);
        let report = Report {
            rounds: 2,
            attempts: vec![
                Attempt {
                    member: "m".into(),
                    attack: "vote",
                    verdict: Verdict::Refused,
                    detail: String::new(),
                },
                Attempt {
                    member: "m".into(),
                    attack: "vote",
                    verdict: Verdict::Accepted,
                    detail: "answered".into(),
                },
            ],
        };
        assert_eq!(
            report.violations(),
            vec!["m: vote: ACCEPTED (1 of 2 rounds): answered"]
        );
        assert!(Report::default().violations().is_empty());
    }

    /// A stand-in for a member's peer port that refuses every call as an
    /// authenticating member does, or (`refuse: false`) answers every call
    /// as a member without authentication does.
    struct MockPeer {
        refuse: bool,
    }

    impl MockPeer {
        // tonic's Status is large by design, as the server's own handlers return it.
        #[allow(clippy::result_large_err)]
        fn answer(&self) -> Result<tonic::Response<Payload>, Status> {
            if self.refuse {
                Err(Status::unauthenticated("no peer secret"))
            } else {
                Ok(tonic::Response::new(Payload { data: vec![0; 8] }))
            }
        }
    }

    #[tonic::async_trait]
    impl ensemble_proto::peer::peer_server::Peer for MockPeer {
        async fn append_entries(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
        async fn vote(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
        async fn install_snapshot(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
        async fn forward(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
        async fn read_index(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
        type WatchLeaderStream = tokio_stream::Pending<Result<Payload, Status>>;
        async fn watch_leader(
            &self,
            _: Request<Payload>,
        ) -> Result<tonic::Response<Self::WatchLeaderStream>, Status> {
            self.answer()
                .map(|_| tonic::Response::new(tokio_stream::pending()))
        }
        async fn touch(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
        async fn evidence(&self, _: Request<Payload>) -> Result<tonic::Response<Payload>, Status> {
            self.answer()
        }
    }

    /// Serves a mock peer port on loopback; returns its address.
    async fn mock_peer(refuse: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None).unwrap();
        let service = ensemble_proto::peer::peer_server::PeerServer::new(MockPeer { refuse });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        addr
    }

    async fn attack_once(addr: &str) -> Report {
        let peers = vec![PeerTarget::parse(&format!("m={addr}")).unwrap()];
        let ids = (SessionId(1), SessionId(2));
        attack(&peers, None, ids, "t", Duration::ZERO, Duration::from_millis(10))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_member_that_refuses_every_call_passes() {
        let report = attack_once(&mock_peer(true).await).await;
        assert_eq!(report.rounds, 1);
        assert_eq!(report.count(Verdict::Refused), report.attempts.len());
        assert!(report.violations().is_empty());
    }

    #[tokio::test]
    async fn a_member_that_answers_outsiders_fails_on_every_call() {
        let report = attack_once(&mock_peer(false).await).await;
        assert_eq!(report.count(Verdict::Accepted), report.attempts.len());
        assert_eq!(
            report.violations().len(),
            attacks(SessionId(1), SessionId(2), "t").unwrap().len()
        );
    }

    #[tokio::test]
    async fn a_member_that_is_down_is_no_refusal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let report = attack_once(&addr).await;
        assert_eq!(report.count(Verdict::Unexpected), report.attempts.len());
        assert!(!report.violations().is_empty());
    }
}
