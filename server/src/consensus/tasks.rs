//! The one owner of a member's long-lived tasks ([`Tasks`]). Every loop a
//! member runs for its whole life (the proposer, read index rounds,
//! forwarding, failover, the leader watch, the liveness loop, the
//! listeners, ...) is spawned here under a name, into one `JoinSet` the
//! member awaits ([`Tasks::watch`]). A loop that ends while the member
//! serves, or any owned task that panics, stops the member: a leader whose
//! proposer died would otherwise fail every write forever while it still
//! answered health checks.
//!
//! Per-request tasks (one per peer call, per client stream) are not owned
//! here: they end all the time, and a panic in one only fails its request.
//!
//! With the `test-hooks` feature, `ENSEMBLE_TEST_PANIC=<name>[@<ms>]` makes
//! the owned task called `<name>` panic that long after it starts (see
//! [`Tasks::test_hook`]); the feature is for the integration tests only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tracing::warn;

/// What an owned task's ending means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Runs as long as the member: ending at all is a failure.
    Lifelong,
    /// Runs as long as the member and is given time to drain at a clean
    /// stop (a listener closing its connections).
    Service,
    /// Does one job (bootstrap, one proposal) and may end; an error or a
    /// panic is still a failure.
    OneShot,
}

/// What an owned task returns: an error is a failure whatever its kind.
pub type Ended = Result<(), String>;

type Owned = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// An owned task's name, kind and abort handle.
type Named = (&'static str, Kind, AbortHandle);

struct Set {
    tasks: JoinSet<Ended>,
    names: HashMap<Id, Named>,
}

struct Inner {
    set: Mutex<Set>,
    /// Woken when a task is added, for an owner that found the set empty.
    added: Notify,
    stopping: AtomicBool,
    #[cfg(feature = "test-hooks")]
    hook: Option<(String, Duration)>,
}

/// The handle that spawns owned tasks; cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    /// An empty owner (reads the test hook when built with `test-hooks`).
    pub fn new() -> Self {
        Tasks {
            inner: Arc::new(Inner {
                set: Mutex::new(Set {
                    tasks: JoinSet::new(),
                    names: HashMap::new(),
                }),
                added: Notify::new(),
                stopping: AtomicBool::new(false),
                #[cfg(feature = "test-hooks")]
                hook: hook::from_env(),
            }),
        }
    }

    fn set(&self) -> MutexGuard<'_, Set> {
        // A panic while holding this lock is impossible (only JoinSet and
        // HashMap calls run under it); a poisoned lock is still consistent.
        self.inner.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns a task the member can not serve without.
    pub fn lifelong(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn(name, Kind::Lifelong, async move {
            task.await;
            Ok(())
        });
    }

    /// Spawns a task that may end; only its panic stops the member.
    pub fn once(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn(name, Kind::OneShot, async move {
            task.await;
            Ok(())
        });
    }

    /// Spawns an owned task of any kind.
    pub fn spawn(&self, name: &'static str, kind: Kind, task: impl Future<Output = Ended> + Send + 'static) {
        let task: Owned = Box::pin(task);
        #[cfg(feature = "test-hooks")]
        let task = hook::wrap(name, self.inner.hook.as_ref(), task);
        let mut set = self.set();
        let handle = set.tasks.spawn(task);
        set.names.insert(handle.id(), (name, kind, handle));
        drop(set);
        self.inner.added.notify_one();
    }

    /// How long after it starts the test hook makes task `name` fail, if
    /// it does (always None without the `test-hooks` feature). Lets a
    /// caller kill a part that is not an owned task (the Raft core).
    pub fn test_hook(&self, name: &str) -> Option<Duration> {
        #[cfg(feature = "test-hooks")]
        {
            self.inner
                .hook
                .as_ref()
                .filter(|(n, _)| n == name)
                .map(|(_, after)| *after)
        }
        #[cfg(not(feature = "test-hooks"))]
        {
            let _ = name;
            None
        }
    }

    /// The next owned task to end, with its name and kind; None if none
    /// is owned.
    async fn next_ended(&self) -> Option<(&'static str, Kind, Result<Ended, JoinError>)> {
        std::future::poll_fn(|cx| {
            let mut set = self.set();
            set.tasks.poll_join_next_with_id(cx).map(|r| {
                r.map(|r| {
                    let id = match &r {
                        Ok((id, _)) => *id,
                        Err(e) => e.id(),
                    };
                    let (name, kind) = set
                        .names
                        .remove(&id)
                        .map_or(("unnamed", Kind::Lifelong), |(name, kind, _)| (name, kind));
                    (name, kind, r.map(|(_, ended)| ended))
                })
            })
        })
        .await
    }

    /// Waits until an owned task fails (a lifelong one ended, or any one
    /// panicked or returned an error) and says which and why. Pending
    /// forever while all is well; ends of one-shot tasks are reaped here.
    pub async fn watch(&self) -> String {
        loop {
            let added = self.inner.added.notified();
            match self.next_ended().await {
                Some((name, kind, result)) => {
                    if let Some(why) = failure(name, kind, result) {
                        if !self.inner.stopping.load(Ordering::Relaxed) {
                            return why;
                        }
                    }
                }
                None => added.await,
            }
        }
    }

    /// A clean stop: from now on nothing that ends is a failure. Aborts
    /// every task but the services, gives those up to `grace` to finish
    /// (they were told to stop by their own means), then aborts the rest.
    pub async fn stop(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        for (_, kind, abort) in self.set().names.values() {
            if *kind != Kind::Service {
                abort.abort();
            }
        }
        let drained = tokio::time::timeout(grace, async {
            while self.next_ended().await.is_some() {
                let services_left = self.set().names.values().any(|(_, k, _)| *k == Kind::Service);
                if !services_left {
                    break;
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!("owned services did not stop in time; aborting them");
        }
        self.set().tasks.abort_all();
    }
}

/// Why an owned task's ending stops the member, if it does.
fn failure(name: &str, kind: Kind, result: Result<Ended, JoinError>) -> Option<String> {
    match result {
        Ok(Ok(())) if kind == Kind::OneShot => None,
        Ok(Ok(())) => Some(format!("task {name} ended while the member was serving")),
        Ok(Err(e)) => Some(format!("task {name} failed: {e}")),
        Err(e) if e.is_panic() => Some(format!("task {name} panicked: {}", panic_message(e))),
        Err(_) => Some(format!("task {name} was cancelled while the member was serving")),
    }
}

fn panic_message(e: JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(feature = "test-hooks")]
pub(crate) mod hook {
    //! `ENSEMBLE_TEST_PANIC=<task>[@<ms>]`: the named owned task panics
    //! `<ms>` (default 0) after it starts. Test builds only.

    use std::time::Duration;

    use tracing::error;

    use super::Owned;

    /// The variable the integration tests set.
    pub const VAR: &str = "ENSEMBLE_TEST_PANIC";

    /// The hook's task name and delay, if set.
    pub fn from_env() -> Option<(String, Duration)> {
        let spec = std::env::var(VAR).ok()?;
        let (name, after) = match spec.split_once('@') {
            Some((name, ms)) => (name.to_string(), ms.parse().ok()?),
            None => (spec, 0),
        };
        Some((name, Duration::from_millis(after)))
    }

    /// The task, made to panic if the hook names it.
    pub fn wrap(name: &'static str, hook: Option<&(String, Duration)>, task: Owned) -> Owned {
        let Some((_, after)) = hook.filter(|(n, _)| n == name) else {
            return task;
        };
        let after = *after;
        Box::pin(async move {
            if after.is_zero() {
                // At once, before the task does anything (a one-shot task
                // may otherwise finish first).
                error!(task = name, "test hook: the task panics now");
                panic!("test hook: {name} panics");
            }
            tokio::select! {
                ended = task => ended,
                _ = tokio::time::sleep(after) => {
                    error!(task = name, "test hook: the task panics now");
                    panic!("test hook: {name} panics");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lifelong_task_that_ends_is_a_failure_naming_it() {
        let tasks = Tasks::new();
        tasks.once("bootstrap", async {});
        tasks.lifelong("forever", std::future::pending());
        tasks.lifelong("proposer", async {});
        let why = tasks.watch().await;
        assert_eq!(why, "task proposer ended while the member was serving");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_even_in_a_one_shot_task() {
        let tasks = Tasks::new();
        tasks.once("bootstrap", async { panic!("boom") });
        let why = tasks.watch().await;
        assert_eq!(why, "task bootstrap panicked: boom");
    }

    #[tokio::test]
    async fn an_error_is_a_failure_and_tasks_added_later_are_watched() {
        let tasks = Tasks::new();
        let watcher = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.watch().await }
        });
        tokio::task::yield_now().await;
        tasks.spawn("clients listener", Kind::Service, async {
            Err("accept failed".into())
        });
        let why = tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(why, "task clients listener failed: accept failed");
    }

    /// A listener that stops while the member runs leaves a member that
    /// serves nobody: it is a failure like any lifelong task's end.
    #[tokio::test]
    async fn a_service_that_stops_while_serving_is_a_failure() {
        let tasks = Tasks::new();
        tasks.spawn("peer-listener", Kind::Service, async { Ok(()) });
        let why = tasks.watch().await;
        assert_eq!(why, "task peer-listener ended while the member was serving");
    }

    #[tokio::test]
    async fn one_shot_tasks_that_end_are_no_failure() {
        let tasks = Tasks::new();
        for _ in 0..10 {
            tasks.once("proposal", async {});
        }
        let watched = tokio::time::timeout(Duration::from_millis(200), tasks.watch()).await;
        assert!(watched.is_err(), "no failure: {watched:?}");
    }

    #[tokio::test]
    async fn a_clean_stop_is_no_failure_and_drains_services() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let drained = Arc::new(AtomicBool::new(false));
        let d = drained.clone();
        tasks.spawn("peers listener", Kind::Service, async move {
            let _ = rx.await;
            d.store(true, Ordering::Relaxed);
            Ok(())
        });
        tasks.lifelong("proposer", std::future::pending());
        let stopping = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.stop(Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(5), stopping)
            .await
            .unwrap()
            .unwrap();
        assert!(drained.load(Ordering::Relaxed), "the service drained");
        assert!(tasks.set().tasks.is_empty());
    }
}
