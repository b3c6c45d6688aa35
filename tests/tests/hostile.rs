//! Requests as a hostile tester sends them (hardening, acceptance 1, 3 and
//! 7): another session's id without its secret, a huge multi, forbidden
//! paths, oversized requests, ZooKeeper's exact request rules. Raw gRPC
//! calls stand for "any gRPC client"; the Rust client must keep working.

use std::time::{Duration, Instant};

use ensemble_client::{CreateMode, ErrorCode, EventType, Op};
use ensemble_proto::v1 as pb;
use ensemble_proto::v1::ensemble_client::EnsembleClient;
use ensemble_proto::ERROR_CODE_KEY;
use ensemble_tests::{poll_until, run_cli, Cluster, ClusterOptions};
use tonic::transport::Channel;

const T: Duration = Duration::from_secs(10);

async fn raw(endpoint: &str) -> EnsembleClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    EnsembleClient::new(ch).max_decoding_message_size(64 * 1024 * 1024)
}

/// The Ensemble error code and message of a refused unary call.
fn refusal<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (String, String) {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => {
            let code = s
                .metadata()
                .get(ERROR_CODE_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .to_string();
            (code, s.message().to_string())
        }
    }
}

fn code<T: std::fmt::Debug>(r: ensemble_client::Result<T>) -> ErrorCode {
    match r {
        Err(e) => e.code(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Every session-scoped unary call, made with `header`; returns each
/// call's name and refusal.
async fn every_call(
    c: &mut EnsembleClient<Channel>,
    header: pb::RequestHeader,
) -> Vec<(&'static str, (String, String))> {
    let h = || Some(header.clone());
    let mut out = Vec::new();
    out.push((
        "heartbeat",
        refusal(c.heartbeat(pb::HeartbeatRequest { header: h() }).await),
    ));
    for (name, mode) in [
        ("create", pb::CreateMode::Persistent),
        ("create ephemeral", pb::CreateMode::Ephemeral),
    ] {
        let req = pb::CreateRequest {
            header: h(),
            path: "/victim/forged".into(),
            data: b"x".to_vec(),
            mode: mode as i32,
            acl: vec![],
        };
        out.push((name, refusal(c.create(req).await)));
    }
    let set = pb::SetRequest {
        header: h(),
        path: "/victim".into(),
        data: b"forged".to_vec(),
        expected_version: -1,
    };
    out.push(("set", refusal(c.set(set).await)));
    let delete = pb::DeleteRequest {
        header: h(),
        path: "/victim/eph".into(),
        expected_version: -1,
    };
    out.push(("delete", refusal(c.delete(delete).await)));
    let multi = pb::MultiRequest {
        header: h(),
        ops: vec![pb::Op {
            op: Some(pb::op::Op::Delete(pb::DeleteOp {
                path: "/victim/eph".into(),
                expected_version: -1,
            })),
        }],
    };
    out.push(("multi", refusal(c.multi(multi).await)));
    let get = pb::GetRequest {
        header: h(),
        path: "/victim".into(),
        watch: false,
    };
    out.push(("get", refusal(c.get(get).await)));
    let exists = pb::ExistsRequest {
        header: h(),
        path: "/victim".into(),
        watch: false,
    };
    out.push(("exists", refusal(c.exists(exists).await)));
    let children = pb::ChildrenRequest {
        header: h(),
        path: "/victim".into(),
        watch: false,
    };
    out.push(("children", refusal(c.children(children).await)));
    let sync = pb::SyncRequest {
        header: h(),
        path: "/victim".into(),
    };
    out.push(("sync", refusal(c.sync(sync).await)));
    let resume = pb::ResumeSessionRequest {
        header: h(),
        secret: header.secret.clone(),
    };
    out.push(("resume", refusal(c.resume_session(resume).await)));
    out.push((
        "close",
        refusal(c.close_session(pb::CloseSessionRequest { header: h() }).await),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_acts_for_a_session_without_its_secret() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let victim = cluster.client(T).await;
    victim
        .create("/victim", b"mine".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    victim
        .create("/victim/eph", vec![], CreateMode::Ephemeral)
        .await
        .unwrap();
    let owner = victim.session_id();
    let id = owner.0;
    // An id that no session has, for comparison: its refusal must read the same.
    let unknown = id + 0x7777_0000;
    let mut attacker = raw(&cluster.endpoint(1)).await;
    for secret in [vec![], vec![0u8; 16], victim.session().secret[..8].to_vec()] {
        let header = |session_id| pb::RequestHeader {
            session_id,
            last_zxid: 0,
            secret: secret.clone(),
        };
        let forged = every_call(&mut attacker, header(id)).await;
        let blind = every_call(&mut attacker, header(unknown)).await;
        for ((call, (code, message)), (_, (_, blind_message))) in forged.iter().zip(&blind) {
            assert_eq!(
                code, "SESSION_EXPIRED",
                "{call} with secret {secret:?}: {message}"
            );
            assert_eq!(
                message.replace(&format!("{id:x}"), "ID"),
                blind_message.replace(&format!("{unknown:x}"), "ID"),
                "{call}: the refusal tells whether the session exists"
            );
            assert!(!message.contains("secret does not match"), "{message}");
        }
    }
    // The session stream refuses the resume too.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::SessionRequest {
        xid: 1,
        request: Some(pb::session_request::Request::Resume(pb::ResumeSessionRequest {
            header: Some(pb::RequestHeader {
                session_id: id,
                last_zxid: 0,
                secret: vec![],
            }),
            secret: vec![1; 16],
        })),
    })
    .await
    .unwrap();
    let mut stream = attacker
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    match stream.message().await.expect("reply").and_then(|m| m.response) {
        Some(pb::session_response::Response::Error(e)) => {
            assert_eq!(e.code, pb::ErrorCode::SessionExpired as i32, "{}", e.message)
        }
        other => panic!("resume with a wrong secret: {other:?}"),
    }

    // The victim and its ephemeral are untouched, and it still works.
    let (data, stat) = victim.get("/victim").await.unwrap();
    assert_eq!((data.as_slice(), stat.version), (&b"mine"[..], 0));
    assert_eq!(victim.children("/victim").await.unwrap().0, vec!["eph"]);
    let eph = victim.exists("/victim/eph").await.unwrap().expect("ephemeral");
    assert_eq!(eph.ephemeral_owner, Some(owner));
    victim.set("/victim", b"still mine".to_vec(), 0).await.unwrap();

    // With the secret, a plain gRPC client (grpcurl, a script) may act for it.
    let proven = pb::RequestHeader {
        session_id: id,
        last_zxid: 0,
        secret: victim.session().secret.clone(),
    };
    let got = attacker
        .get(pb::GetRequest {
            header: Some(proven),
            path: "/victim".into(),
            watch: false,
        })
        .await
        .expect("a proven unary call");
    assert_eq!(got.into_inner().data, b"still mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_heartbeats_do_not_keep_a_dead_session_alive() {
    let t = Duration::from_secs(2);
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let mut holder = cluster.spawn_holder(&[1, 2, 3], t, "/held");
    let id = holder.session.session_id.0;
    let reader = cluster.client(T).await;
    assert!(reader.exists("/held").await.unwrap().is_some());
    let killed = holder.kill();
    // Someone who read the id off a Stat heartbeats it on every node.
    let endpoints = cluster.endpoints();
    let forger = tokio::spawn(async move {
        let mut clients = Vec::new();
        for e in &endpoints {
            clients.push(raw(e).await);
        }
        loop {
            for c in &mut clients {
                let header = Some(pb::RequestHeader {
                    session_id: id,
                    last_zxid: 0,
                    secret: vec![],
                });
                let _ = c.heartbeat(pb::HeartbeatRequest { header }).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let gone = poll_until(t + Duration::from_secs(3), "/held gone", || async {
        matches!(reader.exists("/held").await, Ok(None))
    })
    .await;
    forger.abort();
    eprintln!(
        "ephemeral gone {:?} after its client died, despite forged heartbeats",
        gone - killed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_of_10_000_creates_is_fast_and_small_and_the_limit_is_clean() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    c.create("/big", vec![], CreateMode::Persistent).await.unwrap();
    let rss_before: Vec<u64> = (1..=3).map(|id| cluster.rss_kib(id).expect("rss")).collect();

    // Another client keeps working meanwhile.
    let other = cluster.client(T).await;
    other
        .create("/side", vec![], CreateMode::Persistent)
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let side = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ops, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let start = Instant::now();
                other
                    .set("/side", ops.to_be_bytes().to_vec(), -1)
                    .await
                    .expect("side set");
                other.get("/side").await.expect("side get");
                slowest = slowest.max(start.elapsed());
                ops += 1;
            }
            (ops, slowest)
        })
    };

    let ops: Vec<Op> = (0..10_000)
        .map(|i| Op::Create {
            path: format!("/big/child-{i:05}"),
            data: vec![],
            mode: CreateMode::Persistent,
            acl: vec![],
        })
        .collect();
    let start = Instant::now();
    let results = c
        .multi()
        .ops(ops.clone())
        .run()
        .await
        .expect("multi of 10 000 creates");
    let took = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (side_ops, slowest) = side.await.expect("side task");
    assert_eq!(results.len(), 10_000);
    let zxid = c.last_zxid();
    cluster
        .wait_applied_everywhere(zxid, Duration::from_secs(30))
        .await;
    let rss_after: Vec<u64> = (1..=3).map(|id| cluster.rss_kib(id).expect("rss")).collect();
    let growth_mb: Vec<f64> = rss_before
        .iter()
        .zip(&rss_after)
        .map(|(b, a)| (*a as f64 - *b as f64) / 1024.0)
        .collect();
    eprintln!(
        "multi of 10 000 creates: {took:?}; RSS growth per node (MB): {growth_mb:.1?}; \
         meanwhile another client did {side_ops} set+get pairs, slowest {slowest:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    for (id, g) in growth_mb.iter().enumerate() {
        assert!(*g < 100.0, "node {} grew by {g:.1} MB", id + 1);
    }
    assert!(
        side_ops > 0 && slowest < Duration::from_secs(2),
        "the cluster stalled: {slowest:?}"
    );
    for id in 1..=3 {
        let r = cluster.client_on(&[id], T).await;
        r.sync("/big").await.unwrap();
        assert_eq!(r.children("/big").await.unwrap().0.len(), 10_000, "node {id}");
    }

    // One op over the limit: refused before anything is proposed.
    let mut too_many = ops;
    too_many.push(Op::Create {
        path: "/big/one-too-many".into(),
        data: vec![],
        mode: CreateMode::Persistent,
        acl: vec![],
    });
    let e = c.multi().ops(too_many).run().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadArguments, "{e}");
    assert!(
        e.to_string().contains("10000"),
        "the message names the limit: {e}"
    );
    assert!(c.exists("/big/one-too-many").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_children_and_a_thousand_deep_path_work() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    c.create("/wide", vec![], CreateMode::Persistent).await.unwrap();
    let start = Instant::now();
    for batch in 0..10 {
        let ops = (0..10_000)
            .map(|i| Op::Create {
                path: format!("/wide/n{batch}-{i:05}"),
                data: vec![],
                mode: CreateMode::Persistent,
                acl: vec![],
            })
            .collect::<Vec<_>>();
        c.multi().ops(ops).run().await.expect("multi");
    }
    let filled = start.elapsed();
    let start = Instant::now();
    let (children, stat) = c.children("/wide").await.unwrap();
    let listed = start.elapsed();
    assert_eq!((children.len(), stat.num_children), (100_000, 100_000));
    let start = Instant::now();
    let created = c
        .create("/wide/n", vec![], CreateMode::PersistentSequential)
        .await
        .unwrap();
    let one_more = start.elapsed();
    assert_eq!(created, "/wide/n0000100000");

    let mut path = String::from("/deep");
    c.create(&path, vec![], CreateMode::Persistent).await.unwrap();
    let mut watch = c.add_watch("/deep", true).await.unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        let ops = (0..100)
            .map(|_| {
                path.push_str("/d");
                Op::Create {
                    path: path.clone(),
                    data: vec![],
                    mode: CreateMode::Persistent,
                    acl: vec![],
                }
            })
            .collect::<Vec<_>>();
        c.multi().ops(ops).run().await.expect("deep multi");
    }
    let dug = start.elapsed();
    assert_eq!(path.matches('/').count(), 1001);
    let start = Instant::now();
    c.set(&path, b"bottom".to_vec(), 0).await.unwrap();
    assert_eq!(c.get(&path).await.unwrap().0, b"bottom");
    let deep_ops = start.elapsed();
    let mut seen = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
        seen += 1;
        if e.kind == EventType::NodeDataChanged {
            assert_eq!(e.path, path);
            break;
        }
    }
    assert_eq!(seen, 1001, "one event per create, then the change at the bottom");
    eprintln!(
        "100 000 children created in {filled:?}, listed in {listed:?}, one more sequential create {one_more:?}; \
         1 000-deep path dug in {dug:?}, set+get at the bottom {deep_ops:?}"
    );
    assert!(listed < Duration::from_secs(5) && one_more < Duration::from_secs(2));
    assert!(deep_ops < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_zookeepers_rules_exactly() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    c.create("/a", b"v".to_vec(), CreateMode::Persistent)
        .await
        .unwrap();
    let before = c.children("/").await.unwrap().0;
    for ch in [
        '\u{1}',
        '\n',
        '\u{1f}',
        '\u{7f}',
        '\u{9f}',
        '\u{e000}',
        '\u{f8ff}',
        '\u{fff0}',
        '\u{ffff}',
        '\u{1f600}',
    ] {
        let p = format!("/x{ch}y");
        for mode in [CreateMode::Persistent, CreateMode::PersistentSequential] {
            let e = c.create(&p, vec![], mode).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadArguments, "{p:?}: {e}");
        }
        assert_eq!(code(c.get(&p).await), ErrorCode::BadArguments, "{p:?}");
    }
    assert_eq!(c.children("/").await.unwrap().0, before, "nothing was created");

    // A sequential create validates the name with its suffix, as ZooKeeper's server.
    assert_eq!(
        c.create("/a/.", vec![], CreateMode::PersistentSequential)
            .await
            .unwrap(),
        "/a/.0000000000"
    );
    let endpoints = cluster.endpoints().join(",");
    let (exit, out, err) = run_cli(&["--endpoints", &endpoints, "create", "-s", "/a/.", ""], "");
    assert_eq!((exit, out.trim()), (0, "/a/.0000000001"), "{err}");
    assert_eq!(
        code(c.create("/a/..", vec![], CreateMode::Persistent).await),
        ErrorCode::BadArguments
    );

    // sync checks its path like every other op.
    for bad in ["a", "/a//b", "/a/", "/a/.", "/x\u{7f}"] {
        assert_eq!(code(c.sync(bad).await), ErrorCode::BadArguments, "sync {bad:?}");
    }
    // A version below -1 is an exact version no znode has.
    assert_eq!(code(c.set("/missing", vec![], -2).await), ErrorCode::NoNode);
    assert_eq!(code(c.set("/a", vec![], -2).await), ErrorCode::BadVersion);
    assert_eq!(code(c.delete("/a", -2).await), ErrorCode::BadVersion);
    assert_eq!(code(c.delete("/missing", -5).await), ErrorCode::NoNode);
    assert_eq!(code(c.multi().check("/a", -2).run().await), ErrorCode::BadVersion);
    assert_eq!(c.get("/a").await.unwrap().1.version, 0, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_with_the_limit_not_a_lost_connection() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let c = cluster.client(T).await;
    let two_mib = vec![7u8; 2 * 1024 * 1024];
    let limit = "1081344";

    // The Rust client knows the cluster's limit and refuses before sending.
    let e = c
        .create("/huge", two_mib.clone(), CreateMode::Persistent)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadArguments, "{e}");
    assert!(e.to_string().contains(limit), "{e}");

    // Any other gRPC client gets Ensemble's own code from the node.
    let mut any = raw(&cluster.endpoint(1)).await;
    let session = any
        .create_session(pb::CreateSessionRequest {
            timeout_ms: 10_000,
            auth: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.max_request_bytes.to_string(), limit);
    let header = pb::RequestHeader {
        session_id: session.session_id,
        last_zxid: 0,
        secret: session.secret.clone(),
    };
    let big = pb::CreateRequest {
        header: Some(header.clone()),
        path: "/huge".into(),
        data: two_mib.clone(),
        mode: 0,
        acl: vec![],
    };
    let status = any.create(big.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let (code, message) = refusal::<()>(Err(status));
    assert_eq!(code, "BAD_ARGUMENTS");
    assert!(message.contains(limit), "{message}");

    // On a session stream too: the reply says why before the stream ends.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let resume = pb::ResumeSessionRequest {
        header: Some(header),
        secret: vec![],
    };
    tx.send(pb::SessionRequest {
        xid: 1,
        request: Some(pb::session_request::Request::Resume(resume)),
    })
    .await
    .unwrap();
    let mut stream = any
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().and_then(|m| m.response);
    assert!(
        matches!(first, Some(pb::session_response::Response::Resume(_))),
        "{first:?}"
    );
    tx.send(pb::SessionRequest {
        xid: 2,
        request: Some(pb::session_request::Request::Create(big)),
    })
    .await
    .unwrap();
    match stream.message().await.ok().flatten().and_then(|m| m.response) {
        Some(pb::session_response::Response::Error(e)) => {
            assert_eq!(e.code, pb::ErrorCode::BadArguments as i32, "{}", e.message);
            assert!(e.message.contains(limit) && e.not_applied, "{}", e.message);
        }
        other => panic!("oversized message on the stream: {other:?}"),
    }
    assert!(c.exists("/huge").await.unwrap().is_none());
    // Exactly the data limit still goes through.
    c.create("/max", vec![1u8; 1024 * 1024], CreateMode::Persistent)
        .await
        .unwrap();
}
