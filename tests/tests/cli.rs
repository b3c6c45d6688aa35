//! The `ensemble` CLI as a user drives it (issue 3, acceptance point 5): a
//! scripted shell through a pipe, and one-shot commands with exit codes.

use ensemble_tests::{run_cli, Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_shell_creates_lists_watches_and_deletes() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let endpoints = cluster.endpoints().join(",");
    let script = "\
create /app v1
watch /app -r
create /app/a x
create -s /app/job- j
set /app/a y
ls /app
get /app/a
delete /app/a
delete /app/missing
ls /app
quit
";
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run_cli(&["--endpoints", &endpoints, "shell"], script))
            .await
            .unwrap();
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<String> = out
        .lines()
        .map(|l| match l.split_once(" zxid=") {
            Some((head, _)) => head.to_string(),
            None => l.to_string(),
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            "/app",
            "/app/a",
            "WATCH NODE_CREATED /app/a",
            "/app/job-0000000001",
            "WATCH NODE_CREATED /app/job-0000000001",
            "WATCH NODE_DATA_CHANGED /app/a",
            "a",
            "job-0000000001",
            "y",
            "WATCH NODE_DELETED /app/a",
            "job-0000000001",
        ],
        "stdout was:\n{out}"
    );
    assert_eq!(err.trim(), "error: NO_NODE: /app/missing does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_report_errors_with_exit_codes() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let eps = cluster.endpoints().join(",");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&refs, "")
        })
    };
    let args = |rest: &[&str]| {
        let mut v = vec!["--endpoints".to_string(), eps.clone()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let (code, out, _) = run(args(&["create", "/c", "hello"])).await.unwrap();
    assert_eq!((code, out.trim()), (0, "/c"));
    let (code, out, _) = run(args(&["get", "/c"])).await.unwrap();
    assert_eq!((code, out.trim()), (0, "hello"));
    let (code, _, err) = run(args(&["set", "/c", "x", "-v", "5"])).await.unwrap();
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "error: BAD_VERSION: /c is at version 0, not 5");
    let (code, _, err) = run(args(&["create", "relative"])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("BAD_ARGUMENTS"), "{err}");
    let (code, _, err) = run(args(&["frobnicate"])).await.unwrap();
    assert_eq!(code, 2, "usage errors exit 2: {err}");
    let (code, out, _) = run(args(&["cluster", "status"])).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3);
    assert_eq!(out.lines().filter(|l| l.contains(" leader ")).count(), 1, "{out}");
}
